"""The networks: the on-device recommenders (SASRec, GRU4Rec) split into the
shared layers Θb and the adaptive layers Θc, the Parameter Editor bank
(Eqs. 6–8, 11), the inference primitives that turn a window into adaptive
layers (``adaptation``), padding and batching helpers, and the ranking metrics.

May import ``persona_sim.scenario`` (for the specs) and ``persona_sim.errors``.
Knows nothing of datasets on disk, methods by name, training or simulation.
"""
