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

/// `N` random bytes as lowercase hex: connection ids, method request ids, message ids.
pub fn random_hex<const N: usize>() -> worker::Result<String> {
    Ok(random::<N>()?.iter().map(|b| format!("{b:02x}")).collect())
}

/// A tracking id for error responses: 32 lowercase hex digits, like IoT Hub's.
pub fn tracking_id() -> String {
    random_hex::<16>().unwrap_or_else(|_| "0".repeat(32))
}
