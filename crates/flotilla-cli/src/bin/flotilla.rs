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
    /// Create a cluster's credentials in a directory: a CA, a certificate for each host nodes
    /// are reached at (its subject alternative name), and a cluster secret; prints the
    /// `[remote]` configuration for each host. Run again with more hosts to add them.
    Certs(CertsArgs),
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
    /// A file holding the bearer token for leave and down (the node's management.token).
    /// Without it, the token comes from the environment variable FLOTILLA__MANAGEMENT__TOKEN,
    /// which sets the node's too; it is never an argument, which every user of the machine can
    /// read.
    #[arg(long, value_name = "PATH")]
    token_file: Option<std::path::PathBuf>,
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
        let token = match &self.token_file {
            Some(path) => Some(flotilla_cli::leases::read_secret_file(
                "management token",
                path,
            )?),
            None => std::env::var("FLOTILLA__MANAGEMENT__TOKEN")
                .ok()
                .filter(|t| !t.trim().is_empty()),
        };
        Ok(flotilla::management::client::Client::new(
            &self.endpoint,
            token,
            ca.as_deref(),
            Duration::from_secs(self.timeout.max(1)),
        )?)
    }
}

#[derive(clap::Args)]
struct CertsArgs {
    /// The directory to write to (created if missing; an existing CA and secret are reused).
    #[arg(long, default_value = "certs")]
    out: std::path::PathBuf,
    /// How long the host certificates are valid, in days.
    #[arg(long, default_value_t = 365)]
    days: u32,
    /// Replace existing host certificates.
    #[arg(long)]
    force: bool,
    /// The hosts (DNS names or IP addresses) nodes are reached at, as in their addresses.
    #[arg(required = true)]
    hosts: Vec<String>,
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
    /// out on one machine. Security settings stay as configured.
    #[arg(long)]
    fast: bool,
    /// Run without remoting credentials (remote.insecure = true): anyone who can reach the port
    /// can join, quarantine or down nodes. For a trusted network or a test only; otherwise
    /// create credentials with `flotilla certs`.
    #[arg(long)]
    insecure: bool,
    /// Also run a sharded `counter` entity type and send messages to this many of its
    /// entities, printing every entity start and stop (for multi-process tests).
    #[arg(long, value_name = "ENTITIES")]
    sharded_counters: Option<u32>,
    /// Shards of the counters.
    #[arg(long, default_value_t = 100)]
    shards: u32,
    /// An etcd endpoint for the counters' shard leases.
    #[arg(long, value_name = "URL", conflicts_with_all = ["lease_azure", "lease_azure_file"])]
    lease_etcd: Option<String>,
    /// Azure Blob Storage for the node's leases, the counters' shard leases among them: the
    /// configuration's [lease.azure]. Its connection string is never an argument (every user
    /// of the machine can read a process's arguments): it comes from [lease.azure]
    /// connection-string, the environment variable FLOTILLA__LEASE__AZURE__CONNECTION_STRING,
    /// or --lease-azure-file.
    #[arg(long)]
    lease_azure: bool,
    /// As --lease-azure, with the connection string read from this file.
    #[arg(long, value_name = "PATH")]
    lease_azure_file: Option<std::path::PathBuf>,
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
    /// Azure: a file holding the storage connection string. Without it, the connection string
    /// comes from $FLOTILLA__LEASE__AZURE__CONNECTION_STRING or
    /// $AZURE_STORAGE_CONNECTION_STRING, else it is Azurite's (UseDevelopmentStorage=true); it
    /// is never an argument, which every user of the machine can read.
    #[arg(long, value_name = "PATH")]
    connection_string_file: Option<std::path::PathBuf>,
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
    fn choice(self, backend: BackendKind) -> anyhow::Result<BackendChoice> {
        Ok(match backend {
            BackendKind::Etcd => BackendChoice::Etcd(EtcdSettings {
                endpoints: self.endpoints,
                prefix: self.prefix,
                ..EtcdSettings::default()
            }),
            BackendKind::Azure => BackendChoice::Azure(AzureSettings {
                connection_string: flotilla_cli::leases::azure_connection_string(
                    self.connection_string_file.as_deref(),
                    |name| std::env::var(name).ok(),
                )?,
                container: self.container,
                ..AzureSettings::default()
            }),
            BackendKind::Kubernetes => BackendChoice::Kubernetes(KubernetesSettings {
                namespace: self.namespace,
                api_server: self.api_server,
                ..KubernetesSettings::default()
            }),
        })
    }
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {}", flotilla_cli::report(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
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
    // One error line per panic, in the log (an actor's supervisor logs its failure too).
    flotilla_cli::panics::log_panics();
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
                insecure: args.insecure,
                system: args.system,
                host: args.host,
                port: args.port,
                seeds,
                config: args.config,
                management_port: args.management_port,
                lease_azure: (args.lease_azure || args.lease_azure_file.is_some()).then_some(
                    flotilla_cli::node::AzureLease {
                        connection_string_file: args.lease_azure_file,
                    },
                ),
                fast: args.fast,
                counters: args.sharded_counters.map(|entities| {
                    flotilla_cli::node::ShardedCounters {
                        entities,
                        shards: args.shards,
                        // Azure (--lease-azure) is the node's configured backend.
                        lease: args
                            .lease_etcd
                            .map(|endpoint| BackendChoice::Etcd(EtcdSettings::new([endpoint]))),
                    }
                }),
            };
            runtime.block_on(flotilla_cli::node::run(options))?;
        }
        Command::Certs(args) => {
            let options = flotilla_cli::certs::CertsOptions {
                out: args.out,
                hosts: args.hosts,
                days: args.days,
                force: args.force,
            };
            let report = flotilla_cli::certs::create(&options)?;
            for path in &report.created {
                println!("created {}", path.display());
            }
            for path in &report.kept {
                println!("kept    {}", path.display());
            }
            for host in &options.hosts {
                println!(
                    "\n# {host}: keep ca.key off the nodes\n{}",
                    flotilla_cli::certs::config_snippet(&options.out, host)
                );
            }
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
                token_file: None,
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
                let backend = flotilla_cli::leases::connect(args.choice(kind)?).await?;
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
