from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[DType]
    FLOAT32: _ClassVar[DType]
    FLOAT16: _ClassVar[DType]
    FLOAT64: _ClassVar[DType]
    INT64: _ClassVar[DType]
    INT8: _ClassVar[DType]

class ErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_CODE_UNSPECIFIED: _ClassVar[ErrorCode]
    BAD_FRAME: _ClassVar[ErrorCode]
    UNKNOWN_DEVICE: _ClassVar[ErrorCode]
    BAD_REQUEST: _ClassVar[ErrorCode]
    MODEL_MISMATCH: _ClassVar[ErrorCode]
    INTERNAL: _ClassVar[ErrorCode]
    ABORTED: _ClassVar[ErrorCode]
    SCENARIO_MISMATCH: _ClassVar[ErrorCode]
DTYPE_UNSPECIFIED: DType
FLOAT32: DType
FLOAT16: DType
FLOAT64: DType
INT64: DType
INT8: DType
ERROR_CODE_UNSPECIFIED: ErrorCode
BAD_FRAME: ErrorCode
UNKNOWN_DEVICE: ErrorCode
BAD_REQUEST: ErrorCode
MODEL_MISMATCH: ErrorCode
INTERNAL: ErrorCode
ABORTED: ErrorCode
SCENARIO_MISMATCH: ErrorCode

class Tensor(_message.Message):
    __slots__ = ("name", "dtype", "shape", "data", "scale", "row_scales")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    ROW_SCALES_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: DType
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    scale: float
    row_scales: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[_Union[DType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ..., scale: _Optional[float] = ..., row_scales: _Optional[_Iterable[float]] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message", "device_id", "seq")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    code: ErrorCode
    message: str
    device_id: str
    seq: int
    def __init__(self, code: _Optional[_Union[ErrorCode, str]] = ..., message: _Optional[str] = ..., device_id: _Optional[str] = ..., seq: _Optional[int] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("protocol_version", "node_id", "model_signature", "codecs", "shard_index", "shard_count", "scenario_hash", "partial_edits")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    CODECS_FIELD_NUMBER: _ClassVar[int]
    SHARD_INDEX_FIELD_NUMBER: _ClassVar[int]
    SHARD_COUNT_FIELD_NUMBER: _ClassVar[int]
    SCENARIO_HASH_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_EDITS_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    node_id: str
    model_signature: str
    codecs: _containers.RepeatedScalarFieldContainer[DType]
    shard_index: int
    shard_count: int
    scenario_hash: str
    partial_edits: bool
    def __init__(self, protocol_version: _Optional[int] = ..., node_id: _Optional[str] = ..., model_signature: _Optional[str] = ..., codecs: _Optional[_Iterable[_Union[DType, str]]] = ..., shard_index: _Optional[int] = ..., shard_count: _Optional[int] = ..., scenario_hash: _Optional[str] = ..., partial_edits: _Optional[bool] = ...) -> None: ...

class HelloAck(_message.Message):
    __slots__ = ("protocol_version", "cloud_id", "model_signature", "codec", "max_frame_bytes", "delta_threshold")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CLOUD_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAME_BYTES_FIELD_NUMBER: _ClassVar[int]
    DELTA_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    cloud_id: str
    model_signature: str
    codec: DType
    max_frame_bytes: int
    delta_threshold: float
    def __init__(self, protocol_version: _Optional[int] = ..., cloud_id: _Optional[str] = ..., model_signature: _Optional[str] = ..., codec: _Optional[_Union[DType, str]] = ..., max_frame_bytes: _Optional[int] = ..., delta_threshold: _Optional[float] = ...) -> None: ...

class AdaptRequest(_message.Message):
    __slots__ = ("device_id", "seq", "issued_us", "method", "window", "arrived_us")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    ISSUED_US_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    ARRIVED_US_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    seq: int
    issued_us: int
    method: str
    window: _containers.RepeatedScalarFieldContainer[int]
    arrived_us: int
    def __init__(self, device_id: _Optional[str] = ..., seq: _Optional[int] = ..., issued_us: _Optional[int] = ..., method: _Optional[str] = ..., window: _Optional[_Iterable[int]] = ..., arrived_us: _Optional[int] = ...) -> None: ...

class CloudStages(_message.Message):
    __slots__ = ("enqueued_us", "compute_start_us", "compute_end_us", "departed_us")
    ENQUEUED_US_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_START_US_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_END_US_FIELD_NUMBER: _ClassVar[int]
    DEPARTED_US_FIELD_NUMBER: _ClassVar[int]
    enqueued_us: int
    compute_start_us: int
    compute_end_us: int
    departed_us: int
    def __init__(self, enqueued_us: _Optional[int] = ..., compute_start_us: _Optional[int] = ..., compute_end_us: _Optional[int] = ..., departed_us: _Optional[int] = ...) -> None: ...

class EditPush(_message.Message):
    __slots__ = ("device_id", "seq", "prototype_id", "tensors", "edit_norm", "compute_ns", "stages", "pending", "wire_bytes")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    PROTOTYPE_ID_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    EDIT_NORM_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_NS_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    WIRE_BYTES_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    seq: int
    prototype_id: int
    tensors: _containers.RepeatedCompositeFieldContainer[Tensor]
    edit_norm: float
    compute_ns: int
    stages: CloudStages
    pending: bool
    wire_bytes: int
    def __init__(self, device_id: _Optional[str] = ..., seq: _Optional[int] = ..., prototype_id: _Optional[int] = ..., tensors: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., edit_norm: _Optional[float] = ..., compute_ns: _Optional[int] = ..., stages: _Optional[_Union[CloudStages, _Mapping]] = ..., pending: _Optional[bool] = ..., wire_bytes: _Optional[int] = ...) -> None: ...

class RequestBatch(_message.Message):
    __slots__ = ("frame_id", "requests", "method", "until_us", "next_arrival_us", "final")
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    UNTIL_US_FIELD_NUMBER: _ClassVar[int]
    NEXT_ARRIVAL_US_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    frame_id: int
    requests: _containers.RepeatedCompositeFieldContainer[AdaptRequest]
    method: str
    until_us: int
    next_arrival_us: int
    final: bool
    def __init__(self, frame_id: _Optional[int] = ..., requests: _Optional[_Iterable[_Union[AdaptRequest, _Mapping]]] = ..., method: _Optional[str] = ..., until_us: _Optional[int] = ..., next_arrival_us: _Optional[int] = ..., final: _Optional[bool] = ...) -> None: ...

class EditBatch(_message.Message):
    __slots__ = ("frame_id", "final", "edits", "errors", "until_us", "server_ns", "wait_ns", "values")
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    EDITS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    UNTIL_US_FIELD_NUMBER: _ClassVar[int]
    SERVER_NS_FIELD_NUMBER: _ClassVar[int]
    WAIT_NS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    frame_id: int
    final: bool
    edits: _containers.RepeatedCompositeFieldContainer[EditPush]
    errors: _containers.RepeatedCompositeFieldContainer[Error]
    until_us: int
    server_ns: int
    wait_ns: int
    values: _containers.RepeatedCompositeFieldContainer[EditValues]
    def __init__(self, frame_id: _Optional[int] = ..., final: _Optional[bool] = ..., edits: _Optional[_Iterable[_Union[EditPush, _Mapping]]] = ..., errors: _Optional[_Iterable[_Union[Error, _Mapping]]] = ..., until_us: _Optional[int] = ..., server_ns: _Optional[int] = ..., wait_ns: _Optional[int] = ..., values: _Optional[_Iterable[_Union[EditValues, _Mapping]]] = ...) -> None: ...

class EditValues(_message.Message):
    __slots__ = ("device_ids", "seqs", "prototype_ids", "edit_norms", "compute_ns", "tensors")
    DEVICE_IDS_FIELD_NUMBER: _ClassVar[int]
    SEQS_FIELD_NUMBER: _ClassVar[int]
    PROTOTYPE_IDS_FIELD_NUMBER: _ClassVar[int]
    EDIT_NORMS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_NS_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    device_ids: _containers.RepeatedScalarFieldContainer[str]
    seqs: _containers.RepeatedScalarFieldContainer[int]
    prototype_ids: _containers.RepeatedScalarFieldContainer[int]
    edit_norms: _containers.RepeatedScalarFieldContainer[float]
    compute_ns: _containers.RepeatedScalarFieldContainer[int]
    tensors: _containers.RepeatedCompositeFieldContainer[Tensor]
    def __init__(self, device_ids: _Optional[_Iterable[str]] = ..., seqs: _Optional[_Iterable[int]] = ..., prototype_ids: _Optional[_Iterable[int]] = ..., edit_norms: _Optional[_Iterable[float]] = ..., compute_ns: _Optional[_Iterable[int]] = ..., tensors: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("sent_unix_ns",)
    SENT_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    sent_unix_ns: int
    def __init__(self, sent_unix_ns: _Optional[int] = ...) -> None: ...

class DeviceFrame(_message.Message):
    __slots__ = ("hello", "requests", "heartbeat")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    requests: RequestBatch
    heartbeat: Heartbeat
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., requests: _Optional[_Union[RequestBatch, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ...) -> None: ...

class CloudFrame(_message.Message):
    __slots__ = ("hello_ack", "edits", "error", "heartbeat")
    HELLO_ACK_FIELD_NUMBER: _ClassVar[int]
    EDITS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    hello_ack: HelloAck
    edits: EditBatch
    error: Error
    heartbeat: Heartbeat
    def __init__(self, hello_ack: _Optional[_Union[HelloAck, _Mapping]] = ..., edits: _Optional[_Union[EditBatch, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CloudInfo(_message.Message):
    __slots__ = ("protocol_version", "cloud_id", "model_signature", "model_bytes", "scenario_name", "methods", "max_frame_bytes", "device_count", "scenario_json", "dataset_fingerprint")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CLOUD_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    MODEL_BYTES_FIELD_NUMBER: _ClassVar[int]
    SCENARIO_NAME_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAME_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_COUNT_FIELD_NUMBER: _ClassVar[int]
    SCENARIO_JSON_FIELD_NUMBER: _ClassVar[int]
    DATASET_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    cloud_id: str
    model_signature: str
    model_bytes: int
    scenario_name: str
    methods: _containers.RepeatedScalarFieldContainer[str]
    max_frame_bytes: int
    device_count: int
    scenario_json: str
    dataset_fingerprint: str
    def __init__(self, protocol_version: _Optional[int] = ..., cloud_id: _Optional[str] = ..., model_signature: _Optional[str] = ..., model_bytes: _Optional[int] = ..., scenario_name: _Optional[str] = ..., methods: _Optional[_Iterable[str]] = ..., max_frame_bytes: _Optional[int] = ..., device_count: _Optional[int] = ..., scenario_json: _Optional[str] = ..., dataset_fingerprint: _Optional[str] = ...) -> None: ...

class FetchModelRequest(_message.Message):
    __slots__ = ("model_signature",)
    MODEL_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    model_signature: str
    def __init__(self, model_signature: _Optional[str] = ...) -> None: ...

class FetchDatasetRequest(_message.Message):
    __slots__ = ("fingerprint",)
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    fingerprint: str
    def __init__(self, fingerprint: _Optional[str] = ...) -> None: ...

class ModelChunk(_message.Message):
    __slots__ = ("offset", "data", "total_bytes")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    total_bytes: int
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ..., total_bytes: _Optional[int] = ...) -> None: ...
