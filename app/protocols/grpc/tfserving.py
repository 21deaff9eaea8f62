"""TF Serving's gRPC API, so that its clients (the `tensorflow-serving-api` stubs) switch to this service by
changing only the address: `tensorflow.serving.PredictionService` (Predict, Classify, GetModelMetadata) and
`tensorflow.serving.ModelService` (GetModelStatus), answering as the REST side (`app.protocols.tfserving`)
does.

- Predict: one input, named as the signature's (`images`): a `DT_STRING` [n] tensor of encoded image files
  (decoded like uploads) or a `DT_UINT8` [n, H, W, C] tensor of pixels (`tensor_content`, or `int_val` as
  `tf.make_tensor_proto` writes small ones). Outputs: every signature output (`output_filter` picks some)
  as `DT_FLOAT` tensors.
- Classify, where it fits a classifier of images: each `tf.Example` holds one encoded image file as the
  `bytes_list` feature named as the input; the answer is each image's classes, most probable first, with
  their calibrated probabilities.
- GetModelMetadata: the `serving_default` SignatureDef (`metadata_field` "signature_def"); GetModelStatus:
  the state of every version, as TF Serving reports it.

`model_spec.version` picks a served version; version labels are refused (none is configured). Regress,
MultiInference and HandleReloadConfigRequest answer UNIMPLEMENTED.
"""

from __future__ import annotations

import numpy as np
from google.protobuf import any_pb2
from grpc import aio
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from app.core.errors import InvalidRequest, NotFound
from app.core.imaging import ImageSpec
from app.core.model import LoadedModel, TensorInfo
from app.core.pipeline import Options
from app.core.registry import State
from app.core.service import ModelService
from app.core.tensors import Images
from app.protocols.grpc.generated.tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from app.protocols.grpc.status import answers_errors, deadline
from app.protocols.oip_codec import V2Tensor, binary_images

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"
SIGNATURE_DEF = "signature_def"
_DTYPES = {"UINT8": types_pb2.DT_UINT8, "FP32": types_pb2.DT_FLOAT}
_STATES = {
    State.READY: get_model_status_pb2.ModelVersionStatus.AVAILABLE,
    State.LOADING: get_model_status_pb2.ModelVersionStatus.LOADING,
    State.UNAVAILABLE: get_model_status_pb2.ModelVersionStatus.END,
}
_OK, _UNKNOWN = 0, 2  # tensorflow.error.Code


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """`tensorflow.serving.PredictionService` over the model service."""

    def __init__(self, service: ModelService) -> None:
        self.service = service

    @answers_errors
    async def Predict(
        self, request: predict_pb2.PredictRequest, context: aio.ServicerContext
    ) -> predict_pb2.PredictResponse:
        version = _version(request.model_spec)
        pipeline = self.service.pipeline
        async with pipeline.lease(request.model_spec.name, version) as served:
            model = served.model
            _check_signature(model, request.model_spec.signature_name)
            images = predict_images(request, model)
            options = Options(version=version, deadline=deadline(context))
            result = await pipeline.run(served, images.named("element"), options)
        tensors = model.output_tensors()
        outputs = {tensors[name].name: values for name, values in result.stacked().items()}
        wanted = list(request.output_filter) or list(outputs)
        unknown = sorted(set(wanted) - set(outputs))
        if unknown:
            raise InvalidRequest(
                f"output_filter names unknown output(s) {unknown}; the signature has {sorted(outputs)}"
            )
        response = predict_pb2.PredictResponse(model_spec=_spec(model))
        for name in wanted:
            response.outputs[name].CopyFrom(_float_tensor(outputs[name]))
        return response

    @answers_errors
    async def Classify(
        self, request: classification_pb2.ClassificationRequest, context: aio.ServicerContext
    ) -> classification_pb2.ClassificationResponse:
        version = _version(request.model_spec)
        pipeline = self.service.pipeline
        async with pipeline.lease(request.model_spec.name, version) as served:
            model = served.model
            _check_signature(model, request.model_spec.signature_name)
            images = classify_images(request, model.metadata.signature.input)
            result = await pipeline.run(
                served, images.named("example"), Options(version=version, deadline=deadline(context))
            )
        response = classification_pb2.ClassificationResponse(model_spec=_spec(model))
        for prediction in result.predictions:
            classes = response.result.classifications.add().classes
            for entry in prediction.top_k:
                classes.add(label=entry.label, score=entry.confidence)
        return response

    @answers_errors
    async def GetModelMetadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: aio.ServicerContext
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        fields = list(request.metadata_field)
        if not fields:
            raise InvalidRequest(f"GetModelMetadataRequest must name a metadata_field ({SIGNATURE_DEF!r})")
        unsupported = sorted(set(fields) - {SIGNATURE_DEF})
        if unsupported:
            raise InvalidRequest(f"metadata field(s) {unsupported} are not supported; only {SIGNATURE_DEF!r}")
        model = self.service.model(request.model_spec.name, _version(request.model_spec))
        response = get_model_metadata_pb2.GetModelMetadataResponse(model_spec=_spec(model))
        packed = any_pb2.Any()
        packed.Pack(signature_def_map(model))
        response.metadata[SIGNATURE_DEF].CopyFrom(packed)
        return response


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """`tensorflow.serving.ModelService`: GetModelStatus (reloading a config is not offered)."""

    def __init__(self, service: ModelService) -> None:
        self.service = service

    @answers_errors
    async def GetModelStatus(
        self, request: get_model_status_pb2.GetModelStatusRequest, context: aio.ServicerContext
    ) -> get_model_status_pb2.GetModelStatusResponse:
        task, version = request.model_spec.name, _version(request.model_spec)
        entries = [e for e in self.service.index(task) if version is None or e.version == version]
        if not entries:
            raise NotFound(f"model {task!r}" + (f" version {version}" if version is not None else "") + " not found")
        response = get_model_status_pb2.GetModelStatusResponse()
        for entry in sorted(entries, key=lambda e: e.version, reverse=True):
            status = response.model_version_status.add(version=entry.version, state=_STATES[entry.state])
            status.status.error_code = _UNKNOWN if entry.reason else _OK
            status.status.error_message = entry.reason
        return response


# ------------------------------------------------------------------------------------------- helpers
def _version(spec: model_pb2.ModelSpec) -> int | None:
    """`model_spec.version` (None: the highest served); a version label is refused."""
    choice = spec.WhichOneof("version_choice")
    if choice == "version_label":
        raise InvalidRequest(f"version labels are not supported (got {spec.version_label!r}); give a version")
    if choice is None:
        return None
    if spec.version.value < 1:
        raise InvalidRequest(f"model_spec.version must be positive, got {spec.version.value}")
    return int(spec.version.value)


def _check_signature(model: LoadedModel, name: str) -> None:
    signature = model.metadata.signature.name
    if name not in ("", signature):
        raise NotFound(f"model {model.metadata.task!r} has no signature {name!r}; it has {signature!r}")


def _spec(model: LoadedModel) -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=model.metadata.task, signature_name=model.metadata.signature.name)
    spec.version.value = model.version
    return spec


def _shape(tensor: tensor_pb2.TensorProto) -> list[int]:
    if tensor.tensor_shape.unknown_rank:
        raise InvalidRequest("the input tensor has an unknown rank")
    return [d.size for d in tensor.tensor_shape.dim]


def predict_images(request: predict_pb2.PredictRequest, model: LoadedModel) -> Images:
    """The request's one input (named as the signature's) as images; faults are `InvalidRequest`."""
    name = model.metadata.signature.input
    if list(request.inputs) != [name]:
        raise InvalidRequest(f"the signature's only input is {name!r}; the request has {sorted(request.inputs)}")
    return tensor_images(request.inputs[name], model.spec)


def tensor_images(tensor: tensor_pb2.TensorProto, spec: ImageSpec) -> Images:
    """A `DT_STRING` [n] tensor of encoded files, or a `DT_UINT8` [n, H, W, C] tensor of pixels."""
    shape = _shape(tensor)
    if tensor.dtype == types_pb2.DT_STRING:
        files = list(tensor.string_val)
        if len(shape) != 1 or shape[0] != len(files) or not files:
            raise InvalidRequest(f"DT_STRING input shape must be [n] for n >= 1 images, got {shape} for {len(files)}")
        return Images(files=files)
    if tensor.dtype == types_pb2.DT_UINT8:
        if tensor.tensor_content and tensor.int_val:
            raise InvalidRequest("DT_UINT8 input has both tensor_content and int_val")
        data = tensor.tensor_content
        if not data:
            values = np.asarray(tensor.int_val, dtype=np.int64)
            if values.size and (values.min() < 0 or values.max() > 255):
                raise InvalidRequest("DT_UINT8 values must be in 0..255")
            data = values.astype(np.uint8).tobytes()
        return binary_images(V2Tensor(name="images", shape=shape, datatype="UINT8"), data, spec)
    dtype = types_pb2.DataType.Name(tensor.dtype) if tensor.dtype in types_pb2.DataType.values() else str(tensor.dtype)
    raise InvalidRequest(f"input dtype must be DT_STRING (encoded images) or DT_UINT8 (pixels), got {dtype}")


def classify_images(request: classification_pb2.ClassificationRequest, feature: str) -> Images:
    """One encoded image file per Example, in its `bytes_list` feature `feature`."""
    kind = request.input.WhichOneof("kind")
    if kind is None:
        raise InvalidRequest("the request's input holds no examples")
    examples = getattr(request.input, kind).examples
    if not examples:
        raise InvalidRequest("the request's input holds no examples")
    files = []
    for i, example in enumerate(examples):
        value = example.features.feature.get(feature)
        if value is None or value.WhichOneof("kind") != "bytes_list" or len(value.bytes_list.value) != 1:
            raise InvalidRequest(f"example {i} must hold one encoded image file as the bytes_list feature {feature!r}")
        files.append(value.bytes_list.value[0])
    return Images(files=files)


def _float_tensor(values: np.ndarray) -> tensor_pb2.TensorProto:
    dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in values.shape]
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=dims),
        tensor_content=values.astype("<f4").tobytes(),
    )


def _tensor_info(name: str, tensor: TensorInfo) -> meta_graph_pb2.TensorInfo:
    dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in tensor.shape]
    return meta_graph_pb2.TensorInfo(
        name=name, dtype=_DTYPES[tensor.datatype], tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=dims)
    )


def signature_def_map(model: LoadedModel) -> get_model_metadata_pb2.SignatureDefMap:
    """The model's signature as TF Serving describes a SavedModel's (names as TensorFlow gives them)."""
    signature, source = model.metadata.signature, model.input_tensor()
    definition = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
    definition.inputs[source.name].CopyFrom(_tensor_info(f"{signature.name}_{source.name}:0", source))
    for tensor in model.output_tensors().values():
        definition.outputs[tensor.name].CopyFrom(_tensor_info(f"StatefulPartitionedCall:{tensor.name}", tensor))
    result = get_model_metadata_pb2.SignatureDefMap()
    result.signature_def[signature.name].CopyFrom(definition)
    return result
