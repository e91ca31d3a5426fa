//! The `flotilla` command.

use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use flotilla::lease_azure::AzureSettings;
use flotilla::lease_etcd::EtcdSettings;
use flotilla::lease_kubernetes::KubernetesSettings;
use flotilla_cli::leases::BackendChoice;
use tracing_subscriber::EnvFilter;

/// mimalloc: remoting allocates a message on one thread and frees it on another, which glibc's
/// allocator serializes on its arena locks (see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "flotilla",
    version,
    about = "Flotilla: an actor cluster runtime for Rust"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the failover demo: a 3-node cluster with sharded counters guarded by leases, under
    /// load; one node shuts down gracefully, another crashes; prints a timeline and checks that
    /// no lease is left behind and no shard ran twice (exit status 1 if a check fails).
    Demo(DemoArgs),
    /// Run a supervised local-actor pipeline that crashes, restarts and shuts down cleanly.
    Pipeline {
        /// Milliseconds between input lines.
        #[arg(long, default_value_t = 150)]
        pace_ms: u64,
        /// Keep running after the pipeline is done, until SIGTERM or Ctrl-C.
        #[arg(long)]
        hold: bool,
    },
    /// List the leases (through a node, or a backend directly): name, owner, fencing token,
    /// age, time to expiry, zombie.
    Leases(LeasesArgs),
    /// Run one cluster node: it joins through the seed nodes (or forms a cluster when none are
    /// given) and prints every cluster event; SIGTERM or Ctrl-C makes it leave gracefully.
    Node(NodeArgs),
    /// A node's overview: its status, members by status, shards, associations, readiness.
    Status(ClientArgs),
    /// The cluster's members as a node sees them.
    Members(ClientArgs),
    /// Break a five-node cluster on purpose: node processes with leases and durable ledger
    /// records in a real etcd (started here), under a seeded schedule of kill -9, SIGSTOP,
    /// graceful restarts, etcd pauses and partitions; then check that no acknowledged write was
    /// lost, no entity ran twice, no lease was left behind and every shard serves again (exit
    /// status 1 if not).
    Chaos(ChaosArgs),
    /// Shards per node for every entity type, and the shards hosted on the node asked.
    Shards(ClientArgs),
    /// The node's associations to remote nodes, with their causes.
    Associations(ClientArgs),
    /// Ask a member to leave the cluster gracefully (through any node's endpoint).
    Leave {
        /// The member's address, flotilla://system@host:port (or system@host:port).
        address: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Declare a member down: it is removed without waiting for it.
    Down {
        /// The member's address, flotilla://system@host:port (or system@host:port).
        address: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// How to reach a node's management endpoint.
#[derive(clap::Args, Clone)]
struct ClientArgs {
    /// The management endpoint: http://host:port or host:port.
    #[arg(
        long,
        env = "FLOTILLA_ENDPOINT",
        default_value = "http://127.0.0.1:8558"
    )]
    endpoint: String,
    /// The bearer token for leave and down (the node's management.token; the same variable
    /// sets both).
    #[arg(long, env = "FLOTILLA__MANAGEMENT__TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A CA certificate (PEM) to trust for an HTTPS endpoint.
    #[arg(long, value_name = "PEM")]
    ca_cert: Option<std::path::PathBuf>,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

impl ClientArgs {
    fn client(&self) -> anyhow::Result<flotilla::management::client::Client> {
        let ca = match &self.ca_cert {
            Some(p) => {
                Some(std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?)
            }
            None => None,
        };
        Ok(flotilla::management::client::Client::new(
            &self.endpoint,
            self.token.clone(),
            ca.as_deref(),
            Duration::from_secs(self.timeout.max(1)),
        )?)
    }
}

#[derive(clap::Args)]
struct NodeArgs {
    /// The actor system's name (the same on every node of a cluster).
    #[arg(long, default_value = "flotilla")]
    system: String,
    /// The host to listen on and be reached at.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// The port (0 picks a free one).
    #[arg(long, default_value_t = 2552)]
    port: u16,
    /// A seed node, flotilla://system@host:port (repeatable; the first may form the cluster).
    #[arg(long = "seed")]
    seeds: Vec<String>,
    /// A TOML configuration file (every setting and its default: docs/configuration.md);
    /// FLOTILLA__SECTION__KEY environment variables override it.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// The management endpoint's port, instead of management.port (0 picks a free one).
    #[arg(long)]
    management_port: Option<u16>,
    /// Fast failure detection and decisions (seconds, not tens of seconds), for trying things
    /// out on one machine.
    #[arg(long)]
    fast: bool,
    /// Also run a sharded `counter` entity type and send messages to this many of its
    /// entities, printing every entity start and stop (for multi-process tests).
    #[arg(long, value_name = "ENTITIES")]
    sharded_counters: Option<u32>,
    /// Shards of the counters.
    #[arg(long, default_value_t = 100)]
    shards: u32,
    /// An etcd endpoint for the counters' shard leases.
    #[arg(long, value_name = "URL", conflicts_with = "lease_azure")]
    lease_etcd: Option<String>,
    /// An Azure Blob Storage connection string for the counters' shard leases (records in the
    /// container `flotilla-leases`).
    #[arg(long, value_name = "CONNECTION_STRING", hide_env_values = true)]
    lease_azure: Option<String>,
    /// Also run the durable `ledger` entity type (leases and records in the etcd of
    /// --lease-etcd) with this many entities, asking them to add one and printing every
    /// acknowledgement (for the chaos harness).
    #[arg(long, value_name = "ENTITIES", requires = "lease_etcd")]
    ledger_entities: Option<u32>,
    /// Additions per second this node asks the ledger for.
    #[arg(long, default_value_t = 20)]
    ledger_rate: u32,
    /// Take fault-injection commands on stdin (blackhole/heal ADDRESS), for the chaos
    /// harness.
    #[arg(long, hide = true)]
    chaos_control: bool,
}

#[derive(clap::Args)]
struct ChaosArgs {
    /// The fault schedule's seed (a run is replayed by its seed).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds of faults.
    #[arg(long, default_value_t = 120)]
    duration: u64,
    /// Node processes.
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Ledger entities.
    #[arg(long, default_value_t = 200)]
    entities: u32,
    /// Shards.
    #[arg(long, default_value_t = 20)]
    shards: u32,
    /// Additions each node asks for per second.
    #[arg(long, default_value_t = 20)]
    rate: u32,
    /// The nodes' fast settings (failures noticed within seconds, short leases) instead of
    /// the defaults.
    #[arg(long)]
    fast: bool,
    /// Seconds allowed for the cluster to form, and for every shard to serve again after the
    /// faults.
    #[arg(long, default_value_t = 120)]
    settle_secs: u64,
    /// A directory for each node process's log (node-N-PROCESS.log).
    #[arg(long, value_name = "DIR")]
    logs: Option<std::path::PathBuf>,
    /// How partitions are made: `netns` puts every node in a network namespace of its own and
    /// drops packets in the kernel (needs root or CAP_NET_ADMIN, and iproute2), `injector`
    /// drops frames in each node's fault-injection layer, `auto` uses namespaces where they
    /// can be made.
    #[arg(long, value_enum, default_value = "auto")]
    partitions: PartitionsArg,
}

#[derive(Clone, Copy, ValueEnum)]
enum PartitionsArg {
    Auto,
    Netns,
    Injector,
}

#[derive(Clone, Copy, ValueEnum)]
enum DemoBackendKind {
    /// The embedded in-memory backend (nothing to install).
    Memory,
    /// A real etcd (--etcd-endpoint).
    Etcd,
}

#[derive(clap::Args)]
struct DemoArgs {
    /// Where the shards' leases live.
    #[arg(long, value_enum, default_value = "memory")]
    backend: DemoBackendKind,
    /// With --backend etcd: a client URL of the etcd cluster (repeatable).
    #[arg(long = "etcd-endpoint", default_value = "http://127.0.0.1:2379")]
    etcd_endpoints: Vec<String>,
    /// Counter entities.
    #[arg(long, default_value_t = 10_000)]
    entities: u32,
    /// Shards.
    #[arg(long, default_value_t = 100)]
    shards: u32,
    /// Messages per second each node sends to the counters.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// The dashboard's port (the surviving node's management endpoint; a free one if taken).
    #[arg(long, default_value_t = 8558)]
    management_port: u16,
    /// Seconds of steady load before, between and after the steps.
    #[arg(long, default_value_t = 3)]
    steady_secs: u64,
    /// Fast failure detection and short leases instead of the default settings.
    #[arg(long)]
    fast: bool,
    /// At the end, keep the surviving node and its dashboard running until Ctrl-C or SIGTERM.
    #[arg(long)]
    hold: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendKind {
    Etcd,
    Azure,
    Kubernetes,
}

#[derive(clap::Args)]
struct LeasesArgs {
    /// Read a backend directly instead of asking a node (`--node`).
    #[arg(long, value_enum)]
    backend: Option<BackendKind>,
    /// Without --backend: the node's management endpoint to ask (zombies are judged against
    /// the cluster's current members by that node).
    #[arg(
        long,
        env = "FLOTILLA_ENDPOINT",
        default_value = "http://127.0.0.1:8558"
    )]
    node: String,
    /// Without --backend: print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// etcd: client URL(s) of the cluster (repeatable).
    #[arg(long = "endpoint", default_value = "http://127.0.0.1:2379")]
    endpoints: Vec<String>,
    /// etcd: the key prefix of the leases.
    #[arg(long, default_value = "/flotilla/leases/")]
    prefix: String,
    /// Azure: the storage connection string (or $AZURE_STORAGE_CONNECTION_STRING).
    #[arg(
        long,
        env = "AZURE_STORAGE_CONNECTION_STRING",
        default_value = "UseDevelopmentStorage=true",
        hide_env_values = true
    )]
    connection_string: String,
    /// Azure: the container of the lease records.
    #[arg(long, default_value = "flotilla-leases")]
    container: String,
    /// Kubernetes: the namespace (default: the kubeconfig's).
    #[arg(long)]
    namespace: Option<String>,
    /// Kubernetes: an API server URL to use instead of the kubeconfig, without credentials.
    #[arg(long)]
    api_server: Option<String>,
    /// List only zombie leases: held by owners that are not current cluster members. With
    /// --backend, the members are the `--member`s (their owner ids, by default their
    /// addresses).
    #[arg(long)]
    zombies: bool,
    /// With --backend: a current member's lease owner id (repeatable), for `--zombies`.
    #[arg(long = "member", requires = "backend")]
    members: Vec<String>,
}

impl LeasesArgs {
    fn choice(self, backend: BackendKind) -> BackendChoice {
        match backend {
            BackendKind::Etcd => BackendChoice::Etcd(EtcdSettings {
                endpoints: self.endpoints,
                prefix: self.prefix,
                ..EtcdSettings::default()
            }),
            BackendKind::Azure => BackendChoice::Azure(AzureSettings {
                connection_string: self.connection_string,
                container: self.container,
                ..AzureSettings::default()
            }),
            BackendKind::Kubernetes => BackendChoice::Kubernetes(KubernetesSettings {
                namespace: self.namespace,
                api_server: self.api_server,
                ..KubernetesSettings::default()
            }),
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The demo tells its own story on stdout; the nodes' warnings (a lease still held by a
    // crashed node, a refused connection) are part of it and would only repeat it on stderr.
    let quiet = if matches!(cli.command, Command::Demo(_)) {
        "error"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(quiet)),
        )
        .compact()
        .with_target(false)
        .without_time()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    // A panic inside an actor is a failure its supervisor handles and logs; one line is enough.
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(ToString::to_string).unwrap_or_default();
        tracing::debug!(%location, "panic: {info}");
    }));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    match cli.command {
        Command::Demo(args) => {
            let options = flotilla_cli::demo::DemoOptions {
                backend: match args.backend {
                    DemoBackendKind::Memory => flotilla_cli::demo::DemoBackend::Memory,
                    DemoBackendKind::Etcd => {
                        flotilla_cli::demo::DemoBackend::Etcd(args.etcd_endpoints)
                    }
                },
                entities: args.entities,
                shards: args.shards,
                rate: args.rate,
                management_port: args.management_port,
                steady: Duration::from_secs(args.steady_secs),
                fast: args.fast,
                hold: args.hold,
            };
            let say = |line: &str| {
                use std::io::Write as _;
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            };
            let report = runtime
                .block_on(flotilla_cli::demo::run(options, &say))
                .context("the demo could not finish")?;
            // The nodes' threads are gone; nothing is left to wait for.
            runtime.shutdown_background();
            anyhow::ensure!(report.passed(), "a check failed (see above)");
            println!("\nEvery check held.");
            return Ok(());
        }
        Command::Pipeline { pace_ms, hold } => {
            let options = flotilla_cli::pipeline::DemoOptions {
                pace: Duration::from_millis(pace_ms),
                hold,
                ..Default::default()
            };
            let summary = runtime
                .block_on(flotilla_cli::pipeline::run(
                    options,
                    flotilla_cli::pipeline::Narrator::printing(),
                ))
                .context("the pipeline failed")?;
            println!(
                "summary: {} numbers summed to {}; the parser ran as {} incarnations; {} dead letter(s)",
                summary.numbers, summary.total, summary.parser_incarnations, summary.dead_letters
            );
        }
        Command::Node(args) => {
            let seeds = args
                .seeds
                .iter()
                .map(|s| {
                    s.parse::<flotilla::core::Address>()
                        .with_context(|| format!("bad seed node {s:?}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let ledger = args.ledger_entities.and_then(|entities| {
                args.lease_etcd
                    .clone()
                    .map(|endpoint| flotilla_cli::node::LedgerOptions {
                        entities,
                        shards: args.shards,
                        rate: args.ledger_rate,
                        etcd: EtcdSettings::new([endpoint]),
                    })
            });
            let options = flotilla_cli::node::NodeOptions {
                ledger,
                chaos_control: args.chaos_control,
                system: args.system,
                host: args.host,
                port: args.port,
                seeds,
                config: args.config,
                management_port: args.management_port,
                fast: args.fast,
                counters: args.sharded_counters.map(|entities| {
                    flotilla_cli::node::ShardedCounters {
                        entities,
                        shards: args.shards,
                        lease: match (args.lease_etcd, args.lease_azure) {
                            (Some(endpoint), _) => {
                                Some(BackendChoice::Etcd(EtcdSettings::new([endpoint])))
                            }
                            (None, Some(connection_string)) => {
                                Some(BackendChoice::Azure(AzureSettings {
                                    connection_string,
                                    ..Default::default()
                                }))
                            }
                            (None, None) => None,
                        },
                    }
                }),
            };
            runtime.block_on(flotilla_cli::node::run(options))?;
        }
        Command::Chaos(args) => {
            drop(runtime);
            let options = flotilla_cli::chaos::ChaosOptions {
                binary: std::env::current_exe().context("cannot find this binary")?,
                seed: args.seed,
                nodes: args.nodes.max(2),
                phase: Duration::from_secs(args.duration),
                entities: args.entities,
                shards: args.shards,
                rate: args.rate,
                fast: args.fast,
                settle_limit: Duration::from_secs(args.settle_secs),
                logs: args.logs,
                partitions: match args.partitions {
                    PartitionsArg::Auto => flotilla_cli::chaos::Partitions::Auto,
                    PartitionsArg::Netns => flotilla_cli::chaos::Partitions::Namespaces,
                    PartitionsArg::Injector => flotilla_cli::chaos::Partitions::Injector,
                },
            };
            let say = |line: &str| {
                use std::io::Write as _;
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            };
            let report =
                flotilla_cli::chaos::run(&options, &say).context("the chaos run failed")?;
            for f in &report.findings {
                println!("✗ {}: {}", f.promise, f.what);
            }
            anyhow::ensure!(
                report.passed(),
                "{} promise(s) broken; replay with --seed {}",
                report.findings.len(),
                args.seed
            );
            println!("\nEvery promise held.");
            return Ok(());
        }
        Command::Status(c) => runtime.block_on(flotilla_cli::ops::status(&c.client()?, c.json))?,
        Command::Members(c) => {
            runtime.block_on(flotilla_cli::ops::members(&c.client()?, c.json))?
        }
        Command::Shards(c) => runtime.block_on(flotilla_cli::ops::shards(&c.client()?, c.json))?,
        Command::Associations(c) => {
            runtime.block_on(flotilla_cli::ops::associations(&c.client()?, c.json))?
        }
        Command::Leave { address, client } => runtime.block_on(flotilla_cli::ops::operate(
            &client.client()?,
            client.json,
            &address,
            flotilla::management::api::Operation::Leave,
        ))?,
        Command::Down { address, client } => runtime.block_on(flotilla_cli::ops::operate(
            &client.client()?,
            client.json,
            &address,
            flotilla::management::api::Operation::Down,
        ))?,
        Command::Leases(args) if args.backend.is_none() => {
            let client = ClientArgs {
                endpoint: args.node.clone(),
                token: None,
                ca_cert: None,
                timeout: 10,
                json: args.json,
            };
            runtime.block_on(flotilla_cli::ops::leases(
                &client.client()?,
                client.json,
                args.zombies,
            ))?;
        }
        Command::Leases(args) => {
            anyhow::ensure!(
                !args.zombies || !args.members.is_empty(),
                "--zombies with --backend needs the current members' owner ids (--member, repeatable)"
            );
            let zombies_of = args.zombies.then(|| {
                args.members
                    .iter()
                    .cloned()
                    .collect::<std::collections::BTreeSet<_>>()
            });
            let records = runtime.block_on(async {
                let kind = args.backend.unwrap_or(BackendKind::Etcd);
                let backend = flotilla_cli::leases::connect(args.choice(kind)).await?;
                backend
                    .list()
                    .await
                    .map_err(anyhow::Error::msg)
                    .with_context(|| format!("cannot list the {} leases", backend.kind()))
            })?;
            let records = match &zombies_of {
                Some(members) => flotilla::lease::zombies(&records, members)
                    .into_iter()
                    .cloned()
                    .collect(),
                None => records,
            };
            print!(
                "{}",
                flotilla_cli::leases::table(&records, std::time::SystemTime::now())
            );
        }
    }
    Ok(())
}
