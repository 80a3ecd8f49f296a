//! What every rkube binary needs: logging setup, the shutdown signal, feature gates, and the cluster's TLS
//! material (CA, serving and client certificates) and kubeconfig files.

pub mod featuregate;
pub mod kubeconfig;
pub mod leaderelection;
pub mod logging;
pub mod ports;
pub mod shutdown;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
