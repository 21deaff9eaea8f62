"""gRPC beside REST, in the same process and on the same model service: the Open Inference Protocol v2
(`inference.GRPCInferenceService`, `oip`), TF Serving's `PredictionService` and `ModelService`
(`tfserving`), `grpc.health.v1.Health` (`health`) and server reflection, on `APP_GRPC_PORT` (`server`).

Like the REST protocols, each servicer only translates its messages to one call of `app.core.pipeline`
and back; the error tree maps to status codes in one place (`status`). `generated/` is protoc's output from
the vendored `protos/` (`make protos`); `make lint` checks that they match.
"""
