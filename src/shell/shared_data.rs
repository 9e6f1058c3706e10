//! proxy-wasm shared data as the core's `SharedStore`: one key-value space for every VM of
//! this plugin's `vm_id` in the Envoy process, with compare-and-swap writes.

use crate::core::store::{Cas, SharedStore, WriteError};

use super::host;

pub struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<Cas>) {
        // A record that cannot be read is absent: the core then recreates or refetches it.
        host::get_shared_data(key).unwrap_or((None, None))
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<Cas>) -> Result<(), WriteError> {
        match host::set_shared_data(key, value, cas) {
            Ok(()) => Ok(()),
            Err(e) if host::is_cas_mismatch(e) => Err(WriteError::Conflict),
            Err(_) => Err(WriteError::Failed),
        }
    }
}
