//! proxy-wasm shared data as the core's `SharedStore`: one key-value space for every VM of
//! this plugin's `vm_id` in the Envoy process, with compare-and-swap writes.

use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

use crate::core::store::{Cas, SharedStore, WriteError};

pub struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<Cas>) {
        hostcalls::get_shared_data(key).unwrap_or((None, None))
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<Cas>) -> Result<(), WriteError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(WriteError::Conflict),
            Err(_) => Err(WriteError::Failed),
        }
    }
}
