//! The AMQP side of tokens from arbitrary bytes: a `$cbs` put-token request (decoded as the
//! hub decodes a message), SASL PLAIN's response and user name, a grant checked for an
//! audience and kept among a connection's grants, a link address read as a node: never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use twinhub_core::amqp::cbs::{self, Grants, PlainUser, PutToken};
use twinhub_core::amqp::Message;
use twinhub_core::auth::{Permissions, Policy};

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fuzz_target!(|data: &[u8]| {
    let policies = [Policy { name: "service".into(), key: KEY.into(), permissions: Permissions::SERVICE_CONNECT }];
    let any = |_: &str| true;
    let mut grants = Grants::default();
    if let Ok(message) = Message::decode(data) {
        if let Ok(put) = PutToken::parse(&message) {
            if let Ok(grant) = cbs::authorize(&put.token, &put.audience, &policies, any, 1_700_000_000) {
                let _ = grant.covers_path(&put.audience);
                let _ = grants.put(grant, 1_700_000_000);
            }
        }
    }
    if let Some((user, password)) = cbs::plain_credentials(data) {
        if let Some(PlainUser::Policy(policy)) = PlainUser::parse(&user) {
            if let Ok(grant) = cbs::authorize_plain(policy, &password, &policies, any, 1_700_000_000) {
                let _ = grants.put(grant, 1_700_000_000);
            }
        }
    }
    let text = String::from_utf8_lossy(data);
    let path = cbs::node_path(&text);
    let _ = grants.covering(path, Permissions::SERVICE_CONNECT, 1_700_000_000);
    let _ = cbs::authorize(&text, &text, &policies, any, 1_700_000_000);
});
