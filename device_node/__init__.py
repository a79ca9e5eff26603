"""The device node: one process hosting many simulated devices, talking to the cloud over gRPC."""
