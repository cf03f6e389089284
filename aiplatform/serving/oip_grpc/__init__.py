"""The Open Inference Protocol over gRPC, through Ray Serve's gRPC proxy (see README.md here).

Serve's proxy registers the service with ``SERVICER_FUNCTION`` and calls the gateway's method of
the same name as each RPC (``Gateway.ModelInfer`` ...: the servicer's, ``servicer.py``), with the
request message."""

SERVICER_FUNCTION = "aiplatform.serving.oip_grpc.predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server"
SERVICE_NAME = "inference.GRPCInferenceService"
