"""Evaluation: lmgc against classical codecs (``lmgc bench``) and the paper's experiments.

Modules, in the order data flows through them:

- :mod:`~lmgc.eval.inputs`: tensor files as flat bytes, seeded windows, lossy payloads.
- :mod:`~lmgc.eval.baselines`: classical codecs behind one :class:`~lmgc.eval.baselines.Codec`
  protocol; :mod:`~lmgc.eval.lmgc_codec`: lmgc itself behind the same protocol.
- :mod:`~lmgc.eval.bench`: every codec on every file, decoded and compared, timed.
- :mod:`~lmgc.eval.bench_report`: the bench's markdown table, CSV and JSON.
- :mod:`~lmgc.eval.plan`, :mod:`~lmgc.eval.experiments`, :mod:`~lmgc.eval.cells`,
  :mod:`~lmgc.eval.experiments_report`: what ``lmgc experiments`` measures, the run, its figures
  and its report.
- :mod:`~lmgc.eval.plots`: every chart (matplotlib, optional);
  :mod:`~lmgc.eval.markdown`: the table and number formatting they share.
- :mod:`~lmgc.eval.cli`: the ``lmgc bench`` and ``lmgc experiments`` subcommands.
"""

__all__: list[str] = []
