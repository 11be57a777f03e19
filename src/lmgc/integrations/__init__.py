"""Framework integrations: lmgc on the wire of federated and data-parallel training.

- :mod:`lmgc.integrations.flower`: a Flower ClientApp Mod that compresses the arrays of outgoing
  replies, and a Grid wrapper that restores them bit-exactly on the server (``lmgc[flower]``).
- :mod:`lmgc.integrations.ddp`: a PyTorch ``DistributedDataParallel`` communication hook that
  all-gathers compressed gradient buckets instead of all-reducing raw ones.

Nothing is imported here: ``import lmgc`` must stay free of torch and flwr, so each submodule
imports its framework itself and only when it is imported.
"""
