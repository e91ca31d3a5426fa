//! The body of the `config` fuzz target (`fuzz/fuzz_targets/config.rs`), here so that the
//! corpus replay test runs exactly the same code on every test run.
//!
//! An input is a TOML document, optionally followed by a line `---` and environment overrides,
//! one `SECTION__KEY=value` per line (read as `FLOTILLA__SECTION__KEY`). Parsing must refuse it
//! with an error or accept it; an accepted configuration must be valid, and must serialize to a
//! document that parses back to the same configuration.

use crate::FlotillaConfig;

/// Parses one input (see the module docs); panics only if a property breaks.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (doc, env) = text.split_once("\n---\n").unwrap_or((&text, ""));
    let vars = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (format!("FLOTILLA__{k}"), v.to_owned()));
    let Ok(config) = FlotillaConfig::from_toml_and_env(doc, vars) else {
        return;
    };
    if let Err(e) = config.validate() {
        panic!("an accepted configuration is invalid: {e}");
    }
    let again = toml::to_string(&config)
        .unwrap_or_else(|e| panic!("an accepted configuration does not serialize: {e}"));
    let back = FlotillaConfig::from_toml_str(&again)
        .unwrap_or_else(|e| panic!("a serialized configuration does not parse: {e}\n{again}"));
    assert_eq!(
        back, config,
        "the configuration changed through TOML:\n{again}"
    );
}
