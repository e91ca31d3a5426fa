//! Partitions in the kernel: each node process of a chaos run in a network namespace of its
//! own, linked by a veth pair to a bridge in a hub namespace; the host joins the bridge by one
//! more veth pair, so etcd (and the harness) stay on the host.
//!
//! ```text
//!   host ── flch<pid> 10.213.k.254 ─┐
//!   node 0 ns: eth0 10.213.k.1 ─────┤ br0 (hub ns)
//!   …                               │
//!   node 4 ns: eth0 10.213.k.5 ─────┘
//! ```
//!
//! A cut from node `a` to node `b` drops, in `a`'s namespace, every IP packet `a` sends to `b`
//! (an `htb` class whose queue holds nothing, chosen by a `u32` filter on the destination; the
//! kernel needs no firewall for it): a connection attempt hangs as it does when a SYN is lost,
//! and a live connection stalls until TCP gives up. Cutting both ways is a partition; healing
//! deletes the filter. Everything is made with `ip` and `tc` (Debian's iproute2), needs
//! `CAP_NET_ADMIN`, and is deleted when the [`Namespaces`] is dropped — namespaces a killed run
//! left behind are deleted by the next one.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;

/// Namespace names start with this, then the harness's PID.
const PREFIX: &str = "flotilla-chaos-";

/// The queue that drops everything, and the filters' first priority.
const DROP_CLASS: &str = "1:20";

/// The namespaces of one chaos run.
#[derive(Debug)]
pub struct Namespaces {
    hub: String,
    nodes: Vec<String>,
    host_link: String,
    /// `10.213.k`, free on this machine when made.
    subnet: [u8; 3],
    /// Cuts in force, `(from, to)`.
    cuts: std::collections::BTreeSet<(usize, usize)>,
}

/// Debian keeps iproute2 in /usr/sbin, which a user's PATH may lack.
fn tool(name: &str) -> String {
    let sbin = format!("/usr/sbin/{name}");
    if std::path::Path::new(&sbin).exists() {
        sbin
    } else {
        name.to_owned()
    }
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(tool(program))
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program} (Debian's iproute2)"))?;
    anyhow::ensure!(
        out.status.success(),
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> anyhow::Result<String> {
    run("ip", args)
}

/// Deletes the namespaces of runs whose harness no longer runs.
fn delete_stale() {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            tracing::info!("deleting network namespace {name}, left by an earlier chaos run");
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// A `10.213.k.0/24` that no address or route of the host touches.
fn free_subnet() -> anyhow::Result<[u8; 3]> {
    let taken = format!("{}\n{}", ip(&["-4", "addr"])?, ip(&["-4", "route"])?);
    let start = (std::process::id() % 256) as u8;
    (0..=255u8)
        .map(|i| start.wrapping_add(i))
        .find(|k| !taken.contains(&format!("10.213.{k}.")))
        .map(|k| [10, 213, k])
        .context("no free 10.213.k.0/24 on this host")
}

impl Namespaces {
    /// Makes the hub and one namespace per node, links them, and checks that every node's
    /// namespace reaches the host. On an error, whatever was made is deleted again.
    pub fn create(nodes: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(nodes <= 250, "at most 250 nodes in namespaces, not {nodes}");
        delete_stale();
        let pid = std::process::id();
        let made = Self {
            hub: format!("{PREFIX}{pid}-hub"),
            nodes: (0..nodes).map(|n| format!("{PREFIX}{pid}-n{n}")).collect(),
            host_link: format!("flch{pid}"),
            subnet: free_subnet()?,
            cuts: Default::default(),
        };
        made.build().context("cannot make the network namespaces")?;
        made.check()
            .context("the network namespaces do not carry traffic")?;
        Ok(made)
    }

    fn build(&self) -> anyhow::Result<()> {
        let hub = self.hub.clone();
        ip(&["netns", "add", &hub])?;
        ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            &hub,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "forward_delay",
            "0",
        ])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        let host = self.host_link.clone();
        ip(&[
            "link", "add", &host, "type", "veth", "peer", "name", "host", "netns", &hub,
        ])?;
        ip(&["-n", &hub, "link", "set", "host", "master", "br0", "up"])?;
        let cidr = format!("{}/24", self.host_ip());
        ip(&["addr", "add", &cidr, "dev", &host])?;
        ip(&["link", "set", &host, "up"])?;
        for n in 0..self.nodes.len() {
            let ns = self.nodes[n].clone();
            let port = format!("n{n}");
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns",
                &hub,
            ])?;
            ip(&["-n", &hub, "link", "set", &port, "master", "br0", "up"])?;
            let cidr = format!("{}/24", self.node_ip(n));
            ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            // Unclassified packets leave directly (class 99 does not exist); class 1:20's
            // queue holds nothing, so what a filter sends there is dropped.
            let tc = |args: &[&str]| -> anyhow::Result<String> {
                let mut all = vec!["-n", ns.as_str()];
                all.extend_from_slice(args);
                run("tc", &all)
            };
            tc(&[
                "qdisc", "add", "dev", "eth0", "root", "handle", "1:", "htb", "default", "99",
            ])?;
            tc(&[
                "class", "add", "dev", "eth0", "parent", "1:", "classid", DROP_CLASS, "htb",
                "rate", "8kbit",
            ])?;
            tc(&[
                "qdisc", "add", "dev", "eth0", "parent", DROP_CLASS, "handle", "20:", "pfifo",
                "limit", "0",
            ])?;
        }
        Ok(())
    }

    /// Every node's namespace opens a TCP connection to the host (bash's `/dev/tcp`).
    fn check(&self) -> anyhow::Result<()> {
        let listener = std::net::TcpListener::bind((self.host_ip(), 0))
            .context("cannot listen on the host's end of the bridge")?;
        let port = listener.local_addr()?.port();
        for (n, ns) in self.nodes.iter().enumerate() {
            let script = format!("exec 3<>/dev/tcp/{}/{port}", self.host_ip());
            let mut attempt = 0;
            loop {
                attempt += 1;
                match run(
                    "ip",
                    &["netns", "exec", ns, "timeout", "2", "bash", "-c", &script],
                ) {
                    Ok(_) => break,
                    Err(e) if attempt >= 5 => {
                        return Err(e).with_context(|| format!("node {n}'s namespace"));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        }
        Ok(())
    }

    /// The host's address on the bridge.
    pub fn host_ip(&self) -> IpAddr {
        let [a, b, c] = self.subnet;
        IpAddr::V4(Ipv4Addr::new(a, b, c, 254))
    }

    /// Node `n`'s address.
    pub fn node_ip(&self, n: usize) -> IpAddr {
        let [a, b, c] = self.subnet;
        IpAddr::V4(Ipv4Addr::new(a, b, c, u8::try_from(n + 1).unwrap_or(253)))
    }

    /// The file that names node `n`'s namespace (for `setns`).
    pub fn path(&self, n: usize) -> std::path::PathBuf {
        std::path::Path::new("/run/netns").join(&self.nodes[n])
    }

    /// A command that runs `program` in node `n`'s namespace (`ip netns exec` executes it in
    /// place: the process started is the program itself, with its own PID).
    pub fn command(&self, n: usize, program: &std::path::Path) -> Command {
        let mut cmd = Command::new(tool("ip"));
        cmd.args(["netns", "exec", &self.nodes[n]]);
        cmd.arg(program);
        cmd
    }

    /// Drops every packet node `from` sends to node `to`.
    pub fn cut(&mut self, from: usize, to: usize) -> anyhow::Result<()> {
        if !self.cuts.insert((from, to)) {
            return Ok(());
        }
        let prio = (to + 1).to_string();
        let dst = format!("{}/32", self.node_ip(to));
        run(
            "tc",
            &[
                "-n",
                &self.nodes[from],
                "filter",
                "add",
                "dev",
                "eth0",
                "parent",
                "1:",
                "protocol",
                "ip",
                "prio",
                &prio,
                "u32",
                "match",
                "ip",
                "dst",
                &dst,
                "flowid",
                DROP_CLASS,
            ],
        )
        .map(drop)
    }

    /// Lets what node `from` sends to node `to` through again.
    pub fn heal(&mut self, from: usize, to: usize) -> anyhow::Result<()> {
        if !self.cuts.remove(&(from, to)) {
            return Ok(());
        }
        let prio = (to + 1).to_string();
        run(
            "tc",
            &[
                "-n",
                &self.nodes[from],
                "filter",
                "del",
                "dev",
                "eth0",
                "parent",
                "1:",
                "prio",
                &prio,
            ],
        )
        .map(drop)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in self.nodes.iter().chain(std::iter::once(&self.hub)) {
            let _ = ip(&["netns", "del", ns]);
        }
        // Gone with its peer in the hub; deleted here in case a process still holds the hub.
        let _ = ip(&["link", "del", &self.host_link]);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::net::{SocketAddr, TcpListener, TcpStream};

    /// Runs `f` on a thread that has entered node `n`'s namespace (only that thread moves;
    /// the sockets it makes stay there).
    fn inside<T: Send + 'static>(
        net: &Namespaces,
        n: usize,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let file = std::fs::File::open(net.path(n)).unwrap();
        std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    }

    fn reaches(net: &Namespaces, from: usize, to: SocketAddr) -> bool {
        inside(net, from, move || {
            TcpStream::connect_timeout(&to, Duration::from_millis(700)).is_ok()
        })
    }

    #[test]
    fn a_cut_drops_what_one_node_sends_to_another_until_it_is_healed() {
        // CAP_NET_ADMIN (12) and CAP_SYS_ADMIN (21), which `ip netns add` needs.
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let caps = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .map(|hex| u64::from_str_radix(hex.trim(), 16).unwrap())
            .unwrap();
        let allowed = caps & (1 << 12) != 0 && caps & (1 << 21) != 0;
        let made = Namespaces::create(3);
        if !allowed {
            // Without the rights the harness falls back to the fault-injection layer; what
            // it needs is a clear reason.
            let e = made.expect_err("namespaces need CAP_NET_ADMIN");
            assert!(format!("{e:#}").contains("netns"), "{e:#}");
            return;
        }
        let mut net = made.expect("with CAP_NET_ADMIN and CAP_SYS_ADMIN, namespaces can be made");
        let ip1 = net.node_ip(1);
        let listener = inside(&net, 1, move || TcpListener::bind((ip1, 0)).unwrap());
        let at = listener.local_addr().unwrap();
        assert!(reaches(&net, 0, at), "linked through the bridge");
        assert!(reaches(&net, 2, at));

        net.cut(0, 1).unwrap();
        assert!(
            !reaches(&net, 0, at),
            "the SYN is dropped: the attempt hangs"
        );
        assert!(reaches(&net, 2, at), "other links are untouched");
        net.heal(0, 1).unwrap();
        assert!(reaches(&net, 0, at));

        // One way is enough to stop TCP: the answer to 0's SYN never leaves 1.
        net.cut(1, 0).unwrap();
        assert!(!reaches(&net, 0, at));
        net.cut(1, 0).unwrap();
        net.heal(1, 0).unwrap();
        assert!(reaches(&net, 0, at), "cutting twice is one cut");

        let names: Vec<String> = net.nodes.iter().chain([&net.hub]).cloned().collect();
        drop(net);
        let left = ip(&["netns", "list"]).unwrap();
        for name in names {
            assert!(!left.contains(&name), "{name} deleted: {left}");
        }
    }
}
