//! Runs a [`VirtualDevice`] in the browser: a WebSocket to `/$iothub/websocket` (subprotocol
//! `mqtt`), one `setTimeout` timer, and injected latency. All behaviour is core's; this module
//! only moves bytes, time and actions between the device and the browser, and publishes what the
//! page shows through a signal.

use leptos::prelude::*;
use std::cell::RefCell;
use std::rc::Rc;
use twinhub_core::auth::sign;
use twinhub_core::session::client::ClientOptions;
use twinhub_core::virtual_device::{Action, Config, Faults, LogEntry, Status, VirtualDevice};
use twinhub_core::UnixMillis;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsCast;
use web_sys::{BinaryType, MessageEvent, WebSocket};

/// Traffic log lines kept per device.
const LOG_LINES: usize = 200;
/// Lifetime of the device SAS tokens the runner mints for each connection.
const TOKEN_SECS: u64 = 3_600;

/// What the page shows of one virtual device.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceView {
    /// The device id.
    pub device_id: String,
    /// Online, offline, waiting...
    pub status: Status,
    /// The applied configuration.
    pub config: Config,
    /// Firmware being downloaded.
    pub firmware_update: Option<String>,
    /// Newest first.
    pub log: Vec<LogEntry>,
}

/// One running virtual device. Cloning shares it.
#[derive(Clone)]
pub struct Runner {
    inner: Rc<RefCell<Inner>>,
    /// What the page renders.
    pub view: RwSignal<DeviceView>,
}

struct Inner {
    device: VirtualDevice,
    host: String,
    key: String,
    socket: Option<WebSocket>,
    /// Keeps the socket's callbacks alive while it is open.
    handlers: Vec<Closure<dyn FnMut(web_sys::Event)>>,
    timer: Option<i32>,
    latency_ms: u32,
    /// Bumped for each socket, so events of an old socket are ignored.
    generation: u32,
}

fn now() -> UnixMillis {
    UnixMillis(js_sys::Date::now() as u64)
}

impl Runner {
    /// A device for `device_id` on `host`, signing its tokens with `key`; offline until started.
    pub fn new(host: String, device_id: String, key: String, seed: u64) -> Self {
        let options = ClientOptions {
            device_id: device_id.clone(),
            host: host.clone(),
            token: String::new(),
            keep_alive_secs: 60,
            clean_session: false,
        };
        let device = VirtualDevice::new(options, seed);
        let view = RwSignal::new(DeviceView {
            device_id,
            status: device.status(),
            config: device.config().clone(),
            firmware_update: None,
            log: Vec::new(),
        });
        let inner =
            Inner { device, host, key, socket: None, handlers: Vec::new(), timer: None, latency_ms: 0, generation: 0 };
        Self { inner: Rc::new(RefCell::new(inner)), view }
    }

    /// Online (connects, and reconnects by itself) or offline (a clean disconnect).
    pub fn set_online(&self, online: bool) {
        {
            let mut inner = self.inner.borrow_mut();
            if online {
                inner.device.go_online();
            } else {
                inner.device.go_offline(now());
            }
        }
        self.pump();
    }

    /// Fault: the link drops without a DISCONNECT.
    pub fn drop_link(&self) {
        self.inner.borrow_mut().device.drop_link(now());
        self.pump();
    }

    /// Fault: delay every packet, both ways, by `ms`.
    pub fn set_latency(&self, ms: u32) {
        self.inner.borrow_mut().latency_ms = ms;
    }

    /// Faults kept by the device: refused properties and clock skew.
    pub fn set_faults(&self, faults: Faults) {
        self.inner.borrow_mut().device.set_faults(faults);
    }

    /// Stops for good: offline, socket closed, timer cleared.
    pub fn stop(&self) {
        self.set_online(false);
        let mut inner = self.inner.borrow_mut();
        if let Some(t) = inner.timer.take() {
            window().clear_timeout_with_handle(t);
        }
        if let Some(s) = inner.socket.take() {
            let _ = s.close();
        }
        inner.handlers.clear();
    }

    /// Moves output to the socket, performs actions, publishes the view, re-arms the timer.
    fn pump(&self) {
        let mut actions = Vec::new();
        let mut sends = Vec::new();
        let mut lines = Vec::new();
        {
            let mut inner = self.inner.borrow_mut();
            while let Some(bytes) = inner.device.poll_transmit() {
                sends.push(bytes);
            }
            while let Some(line) = inner.device.poll_log() {
                lines.push(line);
            }
            while let Some(action) = inner.device.poll_action() {
                actions.push(action);
            }
        }
        for bytes in sends {
            self.send(bytes);
        }
        for action in actions {
            match action {
                Action::Open => self.open(),
                Action::Close => self.close_socket(),
            }
        }
        self.publish(lines);
        self.arm();
    }

    fn publish(&self, lines: Vec<LogEntry>) {
        let inner = self.inner.borrow();
        let (status, config, firmware) =
            (inner.device.status(), inner.device.config().clone(), inner.device.firmware_update().map(str::to_owned));
        drop(inner);
        self.view.update(|v| {
            v.status = status;
            v.config = config;
            v.firmware_update = firmware;
            for line in lines {
                v.log.insert(0, line);
            }
            v.log.truncate(LOG_LINES);
        });
    }

    fn send(&self, bytes: Vec<u8>) {
        let latency = self.inner.borrow().latency_ms;
        let socket = self.inner.borrow().socket.clone();
        let Some(socket) = socket else { return };
        if latency == 0 {
            let _ = socket.send_with_u8_array(&bytes);
        } else {
            later(latency as i32, move || {
                let _ = socket.send_with_u8_array(&bytes);
            });
        }
    }

    fn open(&self) {
        self.close_socket();
        let url = websocket_url();
        let generation = {
            let mut inner = self.inner.borrow_mut();
            inner.generation += 1;
            inner.generation
        };
        let socket = match url.and_then(|u| WebSocket::new_with_str(&u, "mqtt").ok()) {
            Some(s) => s,
            None => {
                self.inner.borrow_mut().device.connection_lost(now());
                return self.pump();
            }
        };
        socket.set_binary_type(BinaryType::Arraybuffer);

        let on_open = {
            let runner = self.clone();
            Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
                if runner.inner.borrow().generation != generation {
                    return;
                }
                let token = runner.token();
                runner.inner.borrow_mut().device.connected(now(), token);
                runner.pump();
            })
        };
        let on_message = {
            let runner = self.clone();
            Closure::<dyn FnMut(web_sys::Event)>::new(move |event: web_sys::Event| {
                let Some(message) = event.dyn_ref::<MessageEvent>() else { return };
                let Ok(buffer) = message.data().dyn_into::<js_sys::ArrayBuffer>() else { return };
                let bytes = js_sys::Uint8Array::new(&buffer).to_vec();
                let latency = runner.inner.borrow().latency_ms;
                let runner = runner.clone();
                let deliver = move || {
                    if runner.inner.borrow().generation != generation {
                        return;
                    }
                    runner.inner.borrow_mut().device.handle_bytes(now(), &bytes);
                    runner.pump();
                };
                match latency {
                    0 => deliver(),
                    ms => {
                        later(ms as i32, deliver);
                    }
                }
            })
        };
        let on_close = {
            let runner = self.clone();
            Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
                if runner.inner.borrow().generation != generation {
                    return;
                }
                runner.inner.borrow_mut().socket = None;
                runner.inner.borrow_mut().device.connection_lost(now());
                runner.pump();
            })
        };
        socket.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        socket.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        socket.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        let mut inner = self.inner.borrow_mut();
        inner.handlers = vec![on_open, on_message, on_close];
        inner.socket = Some(socket);
    }

    fn close_socket(&self) {
        let socket = {
            let mut inner = self.inner.borrow_mut();
            // Events of the closed socket no longer reach the device.
            inner.generation += 1;
            inner.socket.take()
        };
        if let Some(socket) = socket {
            let _ = socket.close();
        }
    }

    fn token(&self) -> String {
        let inner = self.inner.borrow();
        // A module's key (`{device}/{module}`) signs for `devices/{device}/modules/{module}`.
        let resource = format!("{}/{}", inner.host, twinhub_core::identity::resource_path(inner.device.device_id()));
        sign(&resource, &inner.key, None, now().as_secs() + TOKEN_SECS).unwrap_or_default()
    }

    fn arm(&self) {
        let due = self.inner.borrow().device.poll_timeout();
        if let Some(t) = self.inner.borrow_mut().timer.take() {
            window().clear_timeout_with_handle(t);
        }
        let Some(due) = due else { return };
        let delay = due.0.saturating_sub(now().0).min(i32::MAX as u64) as i32;
        let runner = self.clone();
        let handle = later(delay, move || {
            runner.inner.borrow_mut().timer = None;
            runner.inner.borrow_mut().device.handle_timeout(now());
            runner.pump();
        });
        self.inner.borrow_mut().timer = handle;
    }
}

/// Runs `f` after `ms`; returns the timer handle.
fn later(ms: i32, f: impl FnOnce() + 'static) -> Option<i32> {
    let callback = Closure::once_into_js(f);
    window().set_timeout_with_callback_and_timeout_and_arguments_0(callback.unchecked_ref(), ms).ok()
}

/// `ws(s)://{this host}/$iothub/websocket`: the hub that served the page.
fn websocket_url() -> Option<String> {
    let location = window().location();
    let scheme = if location.protocol().ok()?.starts_with("https") { "wss" } else { "ws" };
    Some(format!("{scheme}://{}/$iothub/websocket", location.host().ok()?))
}
