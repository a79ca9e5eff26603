"""The jobs the commands run, each a plain function: a whole run on one
machine (``runner``), one device node's shard (``shard``), the in-process
stand-in for gRPC (``transport``), the offline evaluation over seeds and
sweeps (``offline``), and the cost-model calibration (``calibrate``).

The top of the core: may import every subpackage but ``cli`` and ``api``. The node shells
(``cloud_node``, ``device_node``) are thin wrappers around ``jobs``, ``sim`` and
``wire``.
"""
