//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`, the `k8s\0`
//! envelope). Not decoded yet: such bodies get 415 UnsupportedMediaType.

use serde_json::Value;

use apimachinery::status::ApiError;

pub fn decode(_body: &[u8]) -> Result<Value, ApiError> {
    Err(ApiError::unsupported_media_type("application/vnd.kubernetes.protobuf"))
}
