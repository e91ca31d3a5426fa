//! A node that echoes every user message back to its sender: a peer process for real-process
//! tests and benchmarks of remoting.
//!
//! `flotilla-remote-echo <system> <port> (--secret-file <path> | --insecure)` prints
//! `listening <unique address>` once ready, then runs until killed.

use std::time::Duration;

use flotilla_core::{Address, RemoteSettings};
use flotilla_remote::{Inbound, RemoteNode};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: flotilla-remote-echo <system> <port> (--secret-file <path> | --insecure)";
    let (Some(system), Some(port), Some(mode)) = (args.next(), args.next(), args.next()) else {
        return Err(usage.into());
    };
    let (secret_file, insecure) = match mode.as_str() {
        "--secret-file" => (Some(args.next().ok_or(usage)?.into()), false),
        "--insecure" => (None, true),
        _ => return Err(usage.into()),
    };
    let port: u16 = port.parse().map_err(|e| format!("port {port:?}: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let address = Address::remote(&system, "127.0.0.1", port)?;
        let settings = RemoteSettings {
            retry_gate_closed_for: Duration::from_millis(500),
            secret_file,
            insecure,
            ..RemoteSettings::default()
        };
        let (node, mut inbound) = RemoteNode::start(&address, settings)?;
        println!("listening {}", node.local());
        while let Some(item) = inbound.recv().await {
            if let Inbound::User { from, messages } = item {
                for envelope in &messages {
                    let _ = node.send_user_ref(&from.address, envelope);
                }
            }
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
