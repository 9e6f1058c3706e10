//! Our own layer over the proxy-wasm ABI for every host call the shell makes but one.
//!
//! The SDK's `hostcalls` panic on any status they do not expect (and `get_map*` on a map whose
//! lengths do not add up), and a panic kills the VM. Here the same imports return the raw
//! status, and every call is exactly one host call, as through the SDK. Statuses the SDK
//! already returned as errors come back as [`HostError::Refused`], silently, as before; any
//! other is [`HostError::Unexpected`], logged at warn with the call's name and the status only
//! (never a header value, token or key), and the caller fails closed.
//!
//! `dispatch_http_call` stays on the SDK: it must register the callout with the SDK's
//! dispatcher, which otherwise panics when the answer arrives. It returns every status Envoy
//! gives for valid arguments (`Ok`, `BadArgument`, `InternalFailure`) without panicking.

use std::ptr::{null, null_mut};
use std::time::Duration;

use proxy_wasm::types::{BufferType, MapType, MetricType};

use super::wire;

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;
const BAD_ARGUMENT: u32 = 2;
const SERIALIZATION_FAILURE: u32 = 3;
const CAS_MISMATCH: u32 = 8;
const INTERNAL_FAILURE: u32 = 10;

/// `StreamType::HttpRequest` of the ABI.
const HTTP_REQUEST: u32 = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostError {
    /// A status the host documents for this call (e.g. a stream that is gone).
    Refused(u32),
    /// Anything else, or data that breaks the ABI: logged, and the caller fails closed.
    Unexpected(u32),
}

/// The status for data the host returned with `Ok` but that breaks the ABI (not a host
/// status: the ABI's are below 16).
const MALFORMED: u32 = u32::MAX;

fn check(call: &'static str, status: u32, refused: &[u32]) -> Result<(), HostError> {
    if status == OK {
        Ok(())
    } else if refused.contains(&status) {
        Err(HostError::Refused(status))
    } else {
        Err(unexpected(call, status))
    }
}

fn unexpected(call: &'static str, status: u32) -> HostError {
    log::warn!("host call {call} answered an unexpected status {status}; failing closed");
    HostError::Unexpected(status)
}

// The imports the SDK declares too, with the status as a plain u32: an enum cannot hold a
// status it does not list. Same wasm signatures, so the module still imports each once.
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(map_type: u32, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
        cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        details_data: *const u8,
        details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_close_stream(stream_type: u32) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_current_time_nanoseconds(time: *mut u64) -> u32;
    fn proxy_call_foreign_function(
        name_data: *const u8,
        name_size: usize,
        args_data: *const u8,
        args_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
}

/// Takes ownership of a buffer the host filled through the SDK's exported allocator
/// (`proxy_on_memory_allocate`, a boxed slice of exactly `size` bytes); `None` for null.
///
/// # Safety
/// `data` is null, or what the host just returned with `size` from a call that allocates.
unsafe fn owned(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    // SAFETY: as the SDK does: the allocator made a `size`-byte allocation at `data`.
    (!data.is_null()).then(|| unsafe { Vec::from_raw_parts(data, size, size) })
}

/// Every request header (or other map) with its raw value.
pub fn get_map_bytes(map: MapType) -> Result<Vec<(String, Vec<u8>)>, HostError> {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: out-pointers to locals; the result is owned once, below.
    let status = unsafe { proxy_get_header_map_pairs(map as u32, &mut data, &mut size) };
    check("get_header_map_pairs", status, &[])?;
    // SAFETY: `Ok` from a call that allocates.
    match unsafe { owned(data, size) } {
        None => Ok(Vec::new()),
        Some(bytes) => wire::deserialize_map_bytes(&bytes)
            .ok_or_else(|| unexpected("get_header_map_pairs (malformed map)", MALFORMED)),
    }
}

/// One header's value; `None` when it is absent.
pub fn get_map_value_bytes(map: MapType, key: &str) -> Result<Option<Vec<u8>>, HostError> {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: `key` outlives the call; out-pointers to locals.
    let status = unsafe {
        proxy_get_header_map_value(map as u32, key.as_ptr(), key.len(), &mut data, &mut size)
    };
    if status == NOT_FOUND {
        return Ok(None);
    }
    check("get_header_map_value", status, &[])?;
    // SAFETY: `Ok` from a call that allocates.
    Ok(Some(unsafe { owned(data, size) }.unwrap_or_default()))
}

/// Replaces a header (`Some`) or removes it (`None`).
pub fn set_map_value(map: MapType, key: &str, value: Option<&str>) -> Result<(), HostError> {
    // SAFETY: `key` and `value` outlive the call.
    let status = unsafe {
        match value {
            Some(v) => proxy_replace_header_map_value(
                map as u32,
                key.as_ptr(),
                key.len(),
                v.as_ptr(),
                v.len(),
            ),
            None => proxy_remove_header_map_value(map as u32, key.as_ptr(), key.len()),
        }
    };
    check("set_header_map_value", status, &[])
}

/// A property such as `["source", "address"]`; `None` when the host has none.
pub fn get_property(path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
    let path = wire::serialize_property_path(path);
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: `path` outlives the call; out-pointers to locals.
    let status = unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size) };
    if status == NOT_FOUND {
        return Ok(None);
    }
    check(
        "get_property",
        status,
        &[SERIALIZATION_FAILURE, INTERNAL_FAILURE],
    )?;
    // SAFETY: `Ok` from a call that allocates.
    Ok(unsafe { owned(data, size) })
}

/// Up to `max_size` bytes of a buffer from `start`; `None` when there is none.
pub fn get_buffer(
    buffer: BufferType,
    start: usize,
    max_size: usize,
) -> Result<Option<Vec<u8>>, HostError> {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: out-pointers to locals.
    let status =
        unsafe { proxy_get_buffer_bytes(buffer as u32, start, max_size, &mut data, &mut size) };
    if status == NOT_FOUND {
        return Ok(None);
    }
    check("get_buffer_bytes", status, &[])?;
    // SAFETY: `Ok` from a call that allocates.
    Ok(unsafe { owned(data, size) })
}

/// A shared-data record and its CAS; `(None, None)` when absent.
pub fn get_shared_data(key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError> {
    let (mut data, mut size, mut cas) = (null_mut(), 0, 0);
    // SAFETY: `key` outlives the call; out-pointers to locals.
    let status =
        unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
    if status == NOT_FOUND {
        return Ok((None, None));
    }
    check("get_shared_data", status, &[])?;
    // SAFETY: `Ok` from a call that allocates.
    Ok((unsafe { owned(data, size) }, (cas != 0).then_some(cas)))
}

/// Writes a shared-data record; `Refused(CAS_MISMATCH)` when `cas` is stale.
pub fn set_shared_data(key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostError> {
    // SAFETY: `key` and `value` outlive the call.
    let status = unsafe {
        proxy_set_shared_data(
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
            cas.unwrap_or(0),
        )
    };
    check("set_shared_data", status, &[CAS_MISMATCH])
}

pub fn is_cas_mismatch(e: HostError) -> bool {
    e == HostError::Refused(CAS_MISMATCH)
}

/// A local reply on the current stream.
pub fn send_http_response(
    status_code: u32,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(), HostError> {
    let headers = wire::serialize_map(headers);
    // SAFETY: `headers` and `body` outlive the call; no details (null, 0) as the SDK sends.
    let status = unsafe {
        proxy_send_local_response(
            status_code,
            null(),
            0,
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    };
    check("send_local_response", status, &[])
}

pub fn resume_http_request() -> Result<(), HostError> {
    // SAFETY: no pointers.
    let status = unsafe { proxy_continue_stream(HTTP_REQUEST) };
    check("continue_stream", status, &[])
}

pub fn reset_http_request() -> Result<(), HostError> {
    // SAFETY: no pointers.
    let status = unsafe { proxy_close_stream(HTTP_REQUEST) };
    check("close_stream", status, &[])
}

/// Makes `context_id` the context later calls act on; `Refused` when that stream is gone.
pub fn set_effective_context(context_id: u32) -> Result<(), HostError> {
    // SAFETY: no pointers.
    let status = unsafe { proxy_set_effective_context(context_id) };
    check("set_effective_context", status, &[BAD_ARGUMENT])
}

pub fn set_tick_period(period: Duration) -> Result<(), HostError> {
    let ms = u32::try_from(period.as_millis()).unwrap_or(u32::MAX);
    // SAFETY: no pointers.
    let status = unsafe { proxy_set_tick_period_milliseconds(ms) };
    check("set_tick_period_milliseconds", status, &[])
}

/// The host's clock, in nanoseconds since the Unix epoch.
pub fn current_time_ns() -> Result<u64, HostError> {
    let mut ns = 0u64;
    // SAFETY: out-pointer to a local.
    let status = unsafe { proxy_get_current_time_nanoseconds(&mut ns) };
    check("get_current_time_nanoseconds", status, &[])?;
    Ok(ns)
}

/// A foreign function's result; `Refused(NOT_FOUND)` on a host without it.
pub fn call_foreign_function(name: &str, args: &[u8]) -> Result<Option<Vec<u8>>, HostError> {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: `name` and `args` outlive the call; out-pointers to locals.
    let status = unsafe {
        proxy_call_foreign_function(
            name.as_ptr(),
            name.len(),
            args.as_ptr(),
            args.len(),
            &mut data,
            &mut size,
        )
    };
    check(
        "call_foreign_function",
        status,
        &[
            NOT_FOUND,
            BAD_ARGUMENT,
            SERIALIZATION_FAILURE,
            INTERNAL_FAILURE,
        ],
    )?;
    // SAFETY: `Ok` from a call that allocates.
    Ok(unsafe { owned(data, size) })
}

pub fn define_metric(kind: MetricType, name: &str) -> Result<u32, HostError> {
    let mut id = 0;
    // SAFETY: `name` outlives the call; out-pointer to a local.
    let status = unsafe { proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id) };
    check("define_metric", status, &[])?;
    Ok(id)
}

pub fn increment_metric(id: u32, offset: i64) -> Result<(), HostError> {
    // SAFETY: no pointers.
    let status = unsafe { proxy_increment_metric(id, offset) };
    check("increment_metric", status, &[NOT_FOUND, BAD_ARGUMENT])
}

pub fn record_metric(id: u32, value: u64) -> Result<(), HostError> {
    // SAFETY: no pointers.
    let status = unsafe { proxy_record_metric(id, value) };
    check("record_metric", status, &[NOT_FOUND])
}
