//! The performatives of the transport (spec 2.7) and of the SASL layer (spec 5.3.3), with the
//! definitions they carry (2.8 `error`, 3.4 delivery states, 3.5 `source` and `target`).
//!
//! Each is a typed struct read from a described list with every field's type checked and the
//! mandatory ones required; fields the hub has no use for are still type-checked where the
//! spec fixes the type, and otherwise passed over.

use super::fields::{self, composite, opt, Fields};
use super::types::{Descriptor, Value};
use super::DecodeError;

/// Descriptor codes (domain 0x00000000, spec 2.7, 2.8, 3.2, 3.4, 3.5, 5.3.3).
pub mod code {
    pub const OPEN: u64 = 0x10;
    pub const BEGIN: u64 = 0x11;
    pub const ATTACH: u64 = 0x12;
    pub const FLOW: u64 = 0x13;
    pub const TRANSFER: u64 = 0x14;
    pub const DISPOSITION: u64 = 0x15;
    pub const DETACH: u64 = 0x16;
    pub const END: u64 = 0x17;
    pub const CLOSE: u64 = 0x18;
    pub const ERROR: u64 = 0x1d;
    pub const RECEIVED: u64 = 0x23;
    pub const ACCEPTED: u64 = 0x24;
    pub const REJECTED: u64 = 0x25;
    pub const RELEASED: u64 = 0x26;
    pub const MODIFIED: u64 = 0x27;
    pub const SOURCE: u64 = 0x28;
    pub const TARGET: u64 = 0x29;
    pub const SASL_MECHANISMS: u64 = 0x40;
    pub const SASL_INIT: u64 = 0x41;
    pub const SASL_CHALLENGE: u64 = 0x42;
    pub const SASL_RESPONSE: u64 = 0x43;
    pub const SASL_OUTCOME: u64 = 0x44;
}

/// Symbolic descriptors the spec gives each code (1.5: a peer may send either).
fn code_of(descriptor: &Descriptor) -> Option<u64> {
    match descriptor {
        Descriptor::Code(c) => Some(*c),
        Descriptor::Symbol(s) => Some(match s.as_str() {
            "amqp:open:list" => code::OPEN,
            "amqp:begin:list" => code::BEGIN,
            "amqp:attach:list" => code::ATTACH,
            "amqp:flow:list" => code::FLOW,
            "amqp:transfer:list" => code::TRANSFER,
            "amqp:disposition:list" => code::DISPOSITION,
            "amqp:detach:list" => code::DETACH,
            "amqp:end:list" => code::END,
            "amqp:close:list" => code::CLOSE,
            "amqp:error:list" => code::ERROR,
            "amqp:received:list" => code::RECEIVED,
            "amqp:accepted:list" => code::ACCEPTED,
            "amqp:rejected:list" => code::REJECTED,
            "amqp:released:list" => code::RELEASED,
            "amqp:modified:list" => code::MODIFIED,
            "amqp:source:list" => code::SOURCE,
            "amqp:target:list" => code::TARGET,
            "amqp:sasl-mechanisms:list" => code::SASL_MECHANISMS,
            "amqp:sasl-init:list" => code::SASL_INIT,
            "amqp:sasl-challenge:list" => code::SASL_CHALLENGE,
            "amqp:sasl-response:list" => code::SASL_RESPONSE,
            "amqp:sasl-outcome:list" => code::SASL_OUTCOME,
            _ => return None,
        }),
    }
}

/// The code and body of a described value, or what it is not.
pub(crate) fn described(value: Value, what: &'static str) -> Result<(u64, Value), DecodeError> {
    match value {
        Value::Described(d) => match code_of(&d.descriptor) {
            Some(c) => Ok((c, d.value)),
            None => Err(DecodeError::NotAPerformative(format!("{what}: unknown descriptor {:?}", d.descriptor))),
        },
        other => Err(DecodeError::NotAPerformative(format!("{what}: not a described type: {other:?}"))),
    }
}

/// `error` (2.8.14).
#[derive(Clone, Debug, PartialEq)]
pub struct AmqpError {
    /// `amqp:unauthorized-access` and the like (2.8.15-18).
    pub condition: String,
    pub description: Option<String>,
    pub info: Vec<(Value, Value)>,
}

impl AmqpError {
    pub fn new(condition: &str, description: impl Into<String>) -> Self {
        Self { condition: condition.to_owned(), description: Some(description.into()), info: Vec::new() }
    }

    fn read(value: Value) -> Result<Option<Self>, DecodeError> {
        if value == Value::Null {
            return Ok(None);
        }
        let (c, body) = described(value, "error")?;
        if c != code::ERROR {
            return Err(DecodeError::Field {
                performative: "error",
                field: "(descriptor)",
                problem: "is not amqp:error",
            });
        }
        let mut f = composite("error", body)?;
        Ok(Some(Self {
            condition: f.symbol("condition")?,
            description: f.opt_string("description")?,
            info: f.map("info")?,
        }))
    }

    fn write(&self) -> Value {
        fields::write(
            code::ERROR,
            vec![
                Value::Symbol(self.condition.clone()),
                opt(self.description.clone(), Value::String),
                fields::map(&self.info),
            ],
        )
    }
}

fn write_error(e: &Option<AmqpError>) -> Value {
    e.as_ref().map(AmqpError::write).unwrap_or(Value::Null)
}

/// `open` (2.7.1).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Open {
    pub container_id: String,
    pub hostname: Option<String>,
    /// Absent: 4294967295.
    pub max_frame_size: Option<u32>,
    /// Absent: 65535.
    pub channel_max: Option<u16>,
    /// Milliseconds; absent: none.
    pub idle_time_out: Option<u32>,
    pub offered_capabilities: Vec<String>,
    pub desired_capabilities: Vec<String>,
    pub properties: Vec<(Value, Value)>,
}

/// `begin` (2.7.2).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Begin {
    pub remote_channel: Option<u16>,
    pub next_outgoing_id: u32,
    pub incoming_window: u32,
    pub outgoing_window: u32,
    /// Absent: 4294967295.
    pub handle_max: Option<u32>,
    pub properties: Vec<(Value, Value)>,
}

/// A link's role (2.8.1): `false` is the sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Sender,
    Receiver,
}

impl Role {
    fn from_bool(receiver: bool) -> Self {
        if receiver {
            Role::Receiver
        } else {
            Role::Sender
        }
    }

    fn as_bool(self) -> bool {
        self == Role::Receiver
    }
}

/// `source` (3.5.3): where messages come from. The hub reads the address and the filter (the
/// Event Hub consumers' start position); the rest is passed over.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Source {
    pub address: Option<String>,
    /// `filter-set`: filter name -> described filter.
    pub filter: Vec<(Value, Value)>,
}

/// `target` (3.5.4).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Target {
    pub address: Option<String>,
}

/// `attach` (2.7.3).
#[derive(Clone, Debug, PartialEq)]
pub struct Attach {
    pub name: String,
    pub handle: u32,
    pub role: Role,
    /// 0 unsettled, 1 settled, 2 mixed (absent: mixed).
    pub snd_settle_mode: Option<u8>,
    /// 0 first, 1 second (absent: first).
    pub rcv_settle_mode: Option<u8>,
    pub source: Option<Source>,
    pub target: Option<Target>,
    pub initial_delivery_count: Option<u32>,
    pub max_message_size: Option<u64>,
    pub offered_capabilities: Vec<String>,
    pub desired_capabilities: Vec<String>,
    pub properties: Vec<(Value, Value)>,
}

impl Attach {
    /// A client's attach of link `name` on `handle` to the node at `address` (as both
    /// terminus addresses, the way clients write them), as `role`; a sender starts counting
    /// deliveries at 0. Everything else absent.
    pub fn to_node(name: String, handle: u32, role: Role, address: &str) -> Self {
        Attach {
            name,
            handle,
            role,
            snd_settle_mode: None,
            rcv_settle_mode: None,
            source: Some(Source { address: Some(address.into()), filter: vec![] }),
            target: Some(Target { address: Some(address.into()) }),
            initial_delivery_count: (role == Role::Sender).then_some(0),
            max_message_size: None,
            offered_capabilities: vec![],
            desired_capabilities: vec![],
            properties: vec![],
        }
    }
}

impl DeliveryState {
    /// `rejected` with the error `condition` and `description`.
    pub fn rejected(condition: &str, description: impl Into<String>) -> Self {
        DeliveryState::Rejected(Some(AmqpError::new(condition, description)))
    }
}

/// `flow` (2.7.4).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Flow {
    pub next_incoming_id: Option<u32>,
    pub incoming_window: u32,
    pub next_outgoing_id: u32,
    pub outgoing_window: u32,
    pub handle: Option<u32>,
    pub delivery_count: Option<u32>,
    pub link_credit: Option<u32>,
    pub available: Option<u32>,
    pub drain: Option<bool>,
    pub echo: Option<bool>,
}

/// Delivery states (3.4) and outcomes.
#[derive(Clone, Debug, PartialEq)]
pub enum DeliveryState {
    /// `received` (3.4.1): section number and offset.
    Received {
        section_number: u32,
        section_offset: u64,
    },
    Accepted,
    Rejected(Option<AmqpError>),
    Released,
    Modified {
        delivery_failed: Option<bool>,
        undeliverable_here: Option<bool>,
    },
}

impl DeliveryState {
    fn read(value: Value) -> Result<Option<Self>, DecodeError> {
        if value == Value::Null {
            return Ok(None);
        }
        let (c, body) = described(value, "delivery-state")?;
        let name = "delivery-state";
        let mut f = composite(name, body)?;
        Ok(Some(match c {
            code::RECEIVED => Self::Received {
                section_number: f.uint("section-number")?,
                section_offset: f.opt_ulong("section-offset")?.ok_or(DecodeError::Field {
                    performative: name,
                    field: "section-offset",
                    problem: "is mandatory",
                })?,
            },
            code::ACCEPTED => Self::Accepted,
            code::REJECTED => Self::Rejected(AmqpError::read(f.any("error"))?),
            code::RELEASED => Self::Released,
            code::MODIFIED => Self::Modified {
                delivery_failed: f.opt_bool("delivery-failed")?,
                undeliverable_here: f.opt_bool("undeliverable-here")?,
            },
            _ => {
                return Err(DecodeError::Field {
                    performative: name,
                    field: "(descriptor)",
                    problem: "is not a delivery state",
                })
            }
        }))
    }

    fn write(&self) -> Value {
        match self {
            Self::Received { section_number, section_offset } => {
                fields::write(code::RECEIVED, vec![Value::Uint(*section_number), Value::Ulong(*section_offset)])
            }
            Self::Accepted => fields::write(code::ACCEPTED, vec![]),
            Self::Rejected(e) => fields::write(code::REJECTED, vec![write_error(e)]),
            Self::Released => fields::write(code::RELEASED, vec![]),
            Self::Modified { delivery_failed, undeliverable_here } => fields::write(
                code::MODIFIED,
                vec![opt(*delivery_failed, Value::Bool), opt(*undeliverable_here, Value::Bool), Value::Null],
            ),
        }
    }
}

fn write_state(s: &Option<DeliveryState>) -> Value {
    s.as_ref().map(DeliveryState::write).unwrap_or(Value::Null)
}

/// `transfer` (2.7.5), without its payload (which follows the performative in the frame).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Transfer {
    pub handle: u32,
    /// Mandatory on a delivery's first transfer, may be left off on the others.
    pub delivery_id: Option<u32>,
    pub delivery_tag: Option<Vec<u8>>,
    pub message_format: Option<u32>,
    pub settled: Option<bool>,
    pub more: bool,
    pub rcv_settle_mode: Option<u8>,
    pub state: Option<DeliveryState>,
    pub resume: bool,
    pub aborted: bool,
    pub batchable: bool,
}

/// `disposition` (2.7.6).
#[derive(Clone, Debug, PartialEq)]
pub struct Disposition {
    pub role: Role,
    pub first: u32,
    pub last: Option<u32>,
    pub settled: bool,
    pub state: Option<DeliveryState>,
    pub batchable: bool,
}

impl Disposition {
    /// A receiver settling one delivery with `state`.
    pub fn settle(delivery_id: u32, state: DeliveryState) -> Self {
        Disposition {
            role: Role::Receiver,
            first: delivery_id,
            last: None,
            settled: true,
            state: Some(state),
            batchable: false,
        }
    }
}

/// `detach` (2.7.7).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Detach {
    pub handle: u32,
    pub closed: bool,
    pub error: Option<AmqpError>,
}

/// An AMQP frame's performative (2.7).
#[derive(Clone, Debug, PartialEq)]
pub enum Performative {
    Open(Open),
    Begin(Begin),
    Attach(Attach),
    Flow(Flow),
    Transfer(Transfer),
    Disposition(Disposition),
    Detach(Detach),
    /// `end` (2.7.8).
    End(Option<AmqpError>),
    /// `close` (2.7.9).
    Close(Option<AmqpError>),
}

impl Performative {
    /// Reads a performative from its described list.
    pub fn read(value: Value) -> Result<Self, DecodeError> {
        let (c, body) = described(value, "AMQP frame body")?;
        Ok(match c {
            code::OPEN => {
                let mut f = composite("open", body)?;
                let open = Open {
                    container_id: f.string("container-id")?,
                    hostname: f.opt_string("hostname")?,
                    max_frame_size: f.opt_uint("max-frame-size")?,
                    channel_max: f.opt_ushort("channel-max")?,
                    idle_time_out: f.opt_uint("idle-time-out")?,
                    offered_capabilities: {
                        f.symbols("outgoing-locales")?;
                        f.symbols("incoming-locales")?;
                        f.symbols("offered-capabilities")?
                    },
                    desired_capabilities: f.symbols("desired-capabilities")?,
                    properties: f.map("properties")?,
                };
                Performative::Open(open)
            }
            code::BEGIN => {
                let mut f = composite("begin", body)?;
                let begin = Begin {
                    remote_channel: f.opt_ushort("remote-channel")?,
                    next_outgoing_id: f.uint("next-outgoing-id")?,
                    incoming_window: f.uint("incoming-window")?,
                    outgoing_window: f.uint("outgoing-window")?,
                    handle_max: f.opt_uint("handle-max")?,
                    properties: {
                        f.symbols("offered-capabilities")?;
                        f.symbols("desired-capabilities")?;
                        f.map("properties")?
                    },
                };
                Performative::Begin(begin)
            }
            code::ATTACH => Performative::Attach(read_attach(composite("attach", body)?)?),
            code::FLOW => {
                let mut f = composite("flow", body)?;
                Performative::Flow(Flow {
                    next_incoming_id: f.opt_uint("next-incoming-id")?,
                    incoming_window: f.uint("incoming-window")?,
                    next_outgoing_id: f.uint("next-outgoing-id")?,
                    outgoing_window: f.uint("outgoing-window")?,
                    handle: f.opt_uint("handle")?,
                    delivery_count: f.opt_uint("delivery-count")?,
                    link_credit: f.opt_uint("link-credit")?,
                    available: f.opt_uint("available")?,
                    drain: f.opt_bool("drain")?,
                    echo: f.opt_bool("echo")?,
                })
            }
            code::TRANSFER => {
                let mut f = composite("transfer", body)?;
                Performative::Transfer(Transfer {
                    handle: f.uint("handle")?,
                    delivery_id: f.opt_uint("delivery-id")?,
                    delivery_tag: f.opt_binary("delivery-tag")?,
                    message_format: f.opt_uint("message-format")?,
                    settled: f.opt_bool("settled")?,
                    more: f.opt_bool("more")?.unwrap_or(false),
                    rcv_settle_mode: f.opt_ubyte("rcv-settle-mode")?,
                    state: DeliveryState::read(f.any("state"))?,
                    resume: f.opt_bool("resume")?.unwrap_or(false),
                    aborted: f.opt_bool("aborted")?.unwrap_or(false),
                    batchable: f.opt_bool("batchable")?.unwrap_or(false),
                })
            }
            code::DISPOSITION => {
                let mut f = composite("disposition", body)?;
                Performative::Disposition(Disposition {
                    role: Role::from_bool(f.bool("role")?),
                    first: f.uint("first")?,
                    last: f.opt_uint("last")?,
                    settled: f.opt_bool("settled")?.unwrap_or(false),
                    state: DeliveryState::read(f.any("state"))?,
                    batchable: f.opt_bool("batchable")?.unwrap_or(false),
                })
            }
            code::DETACH => {
                let mut f = composite("detach", body)?;
                Performative::Detach(Detach {
                    handle: f.uint("handle")?,
                    closed: f.opt_bool("closed")?.unwrap_or(false),
                    error: AmqpError::read(f.any("error"))?,
                })
            }
            code::END => Performative::End(AmqpError::read(composite("end", body)?.any("error"))?),
            code::CLOSE => Performative::Close(AmqpError::read(composite("close", body)?.any("error"))?),
            other => {
                return Err(DecodeError::NotAPerformative(format!("descriptor {other:#x} is not an AMQP performative")))
            }
        })
    }

    /// The performative as its described list.
    pub fn write(&self) -> Value {
        match self {
            Performative::Open(o) => fields::write(
                code::OPEN,
                vec![
                    Value::String(o.container_id.clone()),
                    opt(o.hostname.clone(), Value::String),
                    opt(o.max_frame_size, Value::Uint),
                    opt(o.channel_max, Value::Ushort),
                    opt(o.idle_time_out, Value::Uint),
                    Value::Null,
                    Value::Null,
                    fields::symbols(&o.offered_capabilities),
                    fields::symbols(&o.desired_capabilities),
                    fields::map(&o.properties),
                ],
            ),
            Performative::Begin(b) => fields::write(
                code::BEGIN,
                vec![
                    opt(b.remote_channel, Value::Ushort),
                    Value::Uint(b.next_outgoing_id),
                    Value::Uint(b.incoming_window),
                    Value::Uint(b.outgoing_window),
                    opt(b.handle_max, Value::Uint),
                    Value::Null,
                    Value::Null,
                    fields::map(&b.properties),
                ],
            ),
            Performative::Attach(a) => write_attach(a),
            Performative::Flow(f) => fields::write(
                code::FLOW,
                vec![
                    opt(f.next_incoming_id, Value::Uint),
                    Value::Uint(f.incoming_window),
                    Value::Uint(f.next_outgoing_id),
                    Value::Uint(f.outgoing_window),
                    opt(f.handle, Value::Uint),
                    opt(f.delivery_count, Value::Uint),
                    opt(f.link_credit, Value::Uint),
                    opt(f.available, Value::Uint),
                    opt(f.drain, Value::Bool),
                    opt(f.echo, Value::Bool),
                    Value::Null,
                ],
            ),
            Performative::Transfer(t) => fields::write(
                code::TRANSFER,
                vec![
                    Value::Uint(t.handle),
                    opt(t.delivery_id, Value::Uint),
                    opt(t.delivery_tag.clone(), Value::Binary),
                    opt(t.message_format, Value::Uint),
                    opt(t.settled, Value::Bool),
                    flag(t.more),
                    opt(t.rcv_settle_mode, Value::Ubyte),
                    write_state(&t.state),
                    flag(t.resume),
                    flag(t.aborted),
                    flag(t.batchable),
                ],
            ),
            Performative::Disposition(d) => fields::write(
                code::DISPOSITION,
                vec![
                    Value::Bool(d.role.as_bool()),
                    Value::Uint(d.first),
                    opt(d.last, Value::Uint),
                    flag(d.settled),
                    write_state(&d.state),
                    flag(d.batchable),
                ],
            ),
            Performative::Detach(d) => {
                fields::write(code::DETACH, vec![Value::Uint(d.handle), flag(d.closed), write_error(&d.error)])
            }
            Performative::End(e) => fields::write(code::END, vec![write_error(e)]),
            Performative::Close(e) => fields::write(code::CLOSE, vec![write_error(e)]),
        }
    }
}

/// A boolean field whose default is false: left off (null) when false.
fn flag(b: bool) -> Value {
    if b {
        Value::Bool(true)
    } else {
        Value::Null
    }
}

fn read_attach(mut f: Fields) -> Result<Attach, DecodeError> {
    let name = f.string("name")?;
    let handle = f.uint("handle")?;
    let role = Role::from_bool(f.bool("role")?);
    let snd_settle_mode = f.opt_ubyte("snd-settle-mode")?;
    let rcv_settle_mode = f.opt_ubyte("rcv-settle-mode")?;
    let source = read_source(f.any("source"))?;
    let target = read_target(f.any("target"))?;
    f.map("unsettled")?;
    f.opt_bool("incomplete-unsettled")?;
    Ok(Attach {
        name,
        handle,
        role,
        snd_settle_mode,
        rcv_settle_mode,
        source,
        target,
        initial_delivery_count: f.opt_uint("initial-delivery-count")?,
        max_message_size: f.opt_ulong("max-message-size")?,
        offered_capabilities: f.symbols("offered-capabilities")?,
        desired_capabilities: f.symbols("desired-capabilities")?,
        properties: f.map("properties")?,
    })
}

fn read_source(value: Value) -> Result<Option<Source>, DecodeError> {
    if value == Value::Null {
        return Ok(None);
    }
    let (c, body) = described(value, "source")?;
    if c != code::SOURCE {
        return Err(DecodeError::Field { performative: "attach", field: "source", problem: "is not amqp:source" });
    }
    let mut f = composite("source", body)?;
    let address = address(&mut f)?;
    f.opt_uint("durable")?;
    f.opt_symbol("expiry-policy")?;
    f.opt_uint("timeout")?;
    f.opt_bool("dynamic")?;
    f.map("dynamic-node-properties")?;
    f.opt_symbol("distribution-mode")?;
    Ok(Some(Source { address, filter: f.map("filter")? }))
}

fn read_target(value: Value) -> Result<Option<Target>, DecodeError> {
    if value == Value::Null {
        return Ok(None);
    }
    let (c, body) = described(value, "target")?;
    if c != code::TARGET {
        return Err(DecodeError::Field { performative: "attach", field: "target", problem: "is not amqp:target" });
    }
    let mut f = composite("target", body)?;
    Ok(Some(Target { address: address(&mut f)? }))
}

/// A terminus address (3.5.3: `*`, in practice a string; some clients send a symbol).
fn address(f: &mut Fields) -> Result<Option<String>, DecodeError> {
    match f.any("address") {
        Value::Null => Ok(None),
        Value::String(s) | Value::Symbol(s) => Ok(Some(s)),
        _ => Err(DecodeError::Field { performative: "terminus", field: "address", problem: "must be a string" }),
    }
}

fn write_attach(a: &Attach) -> Value {
    let source = a.source.as_ref().map(|s| {
        fields::write(
            code::SOURCE,
            vec![
                opt(s.address.clone(), Value::String),
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
                fields::map(&s.filter),
                Value::Null,
                Value::Null,
                Value::Null,
            ],
        )
    });
    let target = a.target.as_ref().map(|t| {
        let mut fields = vec![opt(t.address.clone(), Value::String)];
        fields.resize(7, Value::Null);
        fields::write(code::TARGET, fields)
    });
    fields::write(
        code::ATTACH,
        vec![
            Value::String(a.name.clone()),
            Value::Uint(a.handle),
            Value::Bool(a.role.as_bool()),
            opt(a.snd_settle_mode, Value::Ubyte),
            opt(a.rcv_settle_mode, Value::Ubyte),
            source.unwrap_or(Value::Null),
            target.unwrap_or(Value::Null),
            Value::Null,
            Value::Null,
            opt(a.initial_delivery_count, Value::Uint),
            opt(a.max_message_size, Value::Ulong),
            fields::symbols(&a.offered_capabilities),
            fields::symbols(&a.desired_capabilities),
            fields::map(&a.properties),
        ],
    )
}

/// The SASL frames (5.3.3).
#[derive(Clone, PartialEq)]
pub enum Sasl {
    /// `sasl-mechanisms` (5.3.3.1).
    Mechanisms(Vec<String>),
    /// `sasl-init` (5.3.3.2).
    Init { mechanism: String, initial_response: Option<Vec<u8>>, hostname: Option<String> },
    /// `sasl-challenge` (5.3.3.3).
    Challenge(Vec<u8>),
    /// `sasl-response` (5.3.3.4).
    Response(Vec<u8>),
    /// `sasl-outcome` (5.3.3.5): 0 ok, 1 auth, 2 sys, 3 sys-perm, 4 sys-temp.
    Outcome { code: u8, additional_data: Option<Vec<u8>> },
}

impl std::fmt::Debug for Sasl {
    /// Hides the responses: a PLAIN response carries the password (a SAS token).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sasl::Mechanisms(m) => f.debug_tuple("Mechanisms").field(m).finish(),
            Sasl::Init { mechanism, hostname, .. } => f
                .debug_struct("Init")
                .field("mechanism", mechanism)
                .field("initial_response", &"<hidden>")
                .field("hostname", hostname)
                .finish(),
            Sasl::Challenge(_) => f.write_str("Challenge(<hidden>)"),
            Sasl::Response(_) => f.write_str("Response(<hidden>)"),
            Sasl::Outcome { code, .. } => f.debug_struct("Outcome").field("code", code).finish(),
        }
    }
}

impl Sasl {
    /// Reads a SASL frame body.
    pub fn read(value: Value) -> Result<Self, DecodeError> {
        let (c, body) = described(value, "SASL frame body")?;
        let required = |what: &'static str, field: &'static str| DecodeError::Field {
            performative: what,
            field,
            problem: "is mandatory",
        };
        Ok(match c {
            code::SASL_MECHANISMS => {
                let mechanisms = composite("sasl-mechanisms", body)?.symbols("sasl-server-mechanisms")?;
                if mechanisms.is_empty() {
                    return Err(required("sasl-mechanisms", "sasl-server-mechanisms"));
                }
                Sasl::Mechanisms(mechanisms)
            }
            code::SASL_INIT => {
                let mut f = composite("sasl-init", body)?;
                Sasl::Init {
                    mechanism: f.symbol("mechanism")?,
                    initial_response: f.opt_binary("initial-response")?,
                    hostname: f.opt_string("hostname")?,
                }
            }
            code::SASL_CHALLENGE => Sasl::Challenge(
                composite("sasl-challenge", body)?
                    .opt_binary("challenge")?
                    .ok_or_else(|| required("sasl-challenge", "challenge"))?,
            ),
            code::SASL_RESPONSE => Sasl::Response(
                composite("sasl-response", body)?
                    .opt_binary("response")?
                    .ok_or_else(|| required("sasl-response", "response"))?,
            ),
            code::SASL_OUTCOME => {
                let mut f = composite("sasl-outcome", body)?;
                let code = f.opt_ubyte("code")?.ok_or_else(|| required("sasl-outcome", "code"))?;
                Sasl::Outcome { code, additional_data: f.opt_binary("additional-data")? }
            }
            other => return Err(DecodeError::NotAPerformative(format!("descriptor {other:#x} is not a SASL frame"))),
        })
    }

    /// The SASL frame as its described list.
    pub fn write(&self) -> Value {
        match self {
            Sasl::Mechanisms(m) => {
                // Always an array, as `multiple` allows, even for one mechanism.
                let all = Value::Array(m.iter().map(|s| Value::Symbol(s.clone())).collect());
                fields::write(code::SASL_MECHANISMS, vec![all])
            }
            Sasl::Init { mechanism, initial_response, hostname } => fields::write(
                code::SASL_INIT,
                vec![
                    Value::Symbol(mechanism.clone()),
                    opt(initial_response.clone(), Value::Binary),
                    opt(hostname.clone(), Value::String),
                ],
            ),
            Sasl::Challenge(b) => fields::write(code::SASL_CHALLENGE, vec![Value::Binary(b.clone())]),
            Sasl::Response(b) => fields::write(code::SASL_RESPONSE, vec![Value::Binary(b.clone())]),
            Sasl::Outcome { code, additional_data } => fields::write(
                code::SASL_OUTCOME,
                vec![Value::Ubyte(*code), opt(additional_data.clone(), Value::Binary)],
            ),
        }
    }
}
