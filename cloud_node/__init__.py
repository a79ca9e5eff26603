"""The cloud node: a grpc.aio server around persona_sim's cloud logic."""
