"""The simulated world in SimPy virtual time: devices (arrivals, injected
drift, compute profiles, predictions with the layers they hold), per-device
links and shared cells (``netsim``), the cloud as a batch server (``cloudsim``)
with its real editor (``cloud_engine``), the lockstep rounds that keep device
shards and the cloud on one clock (``lockstep``), and replayed compute times.

May import ``train`` (the bundle), ``methods``, ``model``, ``wire`` (byte
sizes and messages), ``data``, ``scenario`` and ``errors``; never the report,
the jobs or the CLI. Only the modules that run a network (``device``,
``cloud_engine``) import torch.
"""
