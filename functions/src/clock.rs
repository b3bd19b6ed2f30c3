//! The only places this crate reads the clock and the random number generator. Core takes both
//! as arguments.

use twinhub_core::UnixMillis;

/// Now, from the Workers runtime clock.
pub fn now() -> UnixMillis {
    UnixMillis(worker::Date::now().as_millis())
}

/// `N` random bytes from `crypto.getRandomValues`. An RNG failure is reported, never zeros.
pub fn random<const N: usize>() -> worker::Result<[u8; N]> {
    let mut buf = [0u8; N];
    getrandom::getrandom(&mut buf).map_err(|e| worker::Error::RustError(format!("random source failed: {e}")))?;
    Ok(buf)
}

/// A tracking id for error responses: 32 lowercase hex digits, like IoT Hub's.
pub fn tracking_id() -> String {
    match random::<16>() {
        Ok(bytes) => bytes.iter().map(|b| format!("{b:02x}")).collect(),
        Err(_) => "0".repeat(32),
    }
}
