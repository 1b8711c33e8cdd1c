//! `run --config FILE`: every `run` option in TOML, under the option's long name with
//! `_` or `-` (`pid = [1234]`, `every_event = true`, `output = "/var/log/x.jsonl"`).
//! The file's settings become command-line arguments placed before the real ones, so
//! clap checks them with the very same rules, and a flag given on the command line
//! overrides the file (list options such as `pid` and `comm` add to it). Unknown keys
//! and bad values are refused with the key, its line and what is allowed.

use std::{ffi::OsString, path::Path};

use anyhow::{Context, Result, bail};
use clap::{CommandFactory, error::ErrorKind};

use crate::commands::cli::Cli;

/// The `run` arguments the file at `path` stands for.
pub fn arguments(path: &Path) -> Result<Vec<OsString>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    let table: toml::Table = text.parse().map_err(|err: toml::de::Error| {
        anyhow::anyhow!("{} is not valid TOML: {}", path.display(), err.message())
    })?;
    let shown = path.display();
    let command = Cli::command();
    let run = command.find_subcommand("run").expect("run exists");
    let allowed: Vec<&str> = run
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|long| !matches!(*long, "config" | "help"))
        .collect();
    let mut args = Vec::new();
    for (key, value) in &table {
        let line = line_of(&text, key);
        let long = key.replace('_', "-");
        if !allowed.contains(&long.as_str()) {
            bail!(
                "{shown}:{line}: unknown key `{key}`; allowed keys: {}",
                allowed
                    .iter()
                    .map(|k| k.replace('-', "_"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let flag = format!("--{long}");
        let values = match value {
            toml::Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        for value in values {
            let mut pair = match value {
                toml::Value::Boolean(true) => vec![flag.clone()],
                toml::Value::Boolean(false) => vec![],
                toml::Value::String(s) => vec![flag.clone(), s.clone()],
                toml::Value::Integer(n) => vec![flag.clone(), n.to_string()],
                toml::Value::Float(x) => vec![flag.clone(), x.to_string()],
                _ => bail!(
                    "{shown}:{line}: `{key}` must be a string, a number, a boolean or a list of them"
                ),
            };
            // Checked alone, with clap's own parsers, so the error names this key.
            let mut probe = vec!["map-audit".to_string(), "run".into(), "--all".into()];
            probe.extend(pair.iter().cloned());
            // Relations between options (a conflict with the probe's --all, one that
            // needs another) are left to the parse of the whole command line.
            if let Err(err) = Cli::command().try_get_matches_from(&probe)
                && !matches!(
                    err.kind(),
                    ErrorKind::ArgumentConflict | ErrorKind::MissingRequiredArgument
                )
            {
                // clap's message, with what is allowed, on one line.
                let reason = err
                    .to_string()
                    .lines()
                    .map(str::trim)
                    .take_while(|l| !l.starts_with("For more information"))
                    .filter(|l| !l.is_empty() && !l.starts_with("tip:"))
                    .collect::<Vec<_>>()
                    .join(" ");
                let reason = reason.trim_start_matches("error: ");
                bail!("{shown}:{line}: bad value for `{key}`: {reason}");
            }
            args.extend(pair.drain(..).map(OsString::from));
        }
    }
    Ok(args)
}

/// The 1-based line where `key` is set, for messages (0 if not found).
fn line_of(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map_or(0, |i| i + 1)
}

/// The process's arguments with `--config FILE`'s settings spliced in after `run`,
/// or unchanged when there is no `--config`.
pub fn expand(argv: Vec<OsString>) -> Result<Vec<OsString>> {
    // `run` is the first argument (the CLI has no global options before it).
    let run_at = 1;
    if argv.get(run_at).is_none_or(|a| a != "run") {
        return Ok(argv);
    }
    let mut config = None;
    let mut rest = Vec::new();
    let mut iter = argv[run_at + 1..].iter();
    while let Some(arg) = iter.next() {
        if arg == "--" {
            rest.push(arg.clone());
            rest.extend(iter.by_ref().cloned());
            break;
        }
        if arg == "--config" {
            config = iter.next().cloned();
            if config.is_none() {
                bail!("--config needs a FILE");
            }
        } else if let Some(path) = arg.to_str().and_then(|a| a.strip_prefix("--config=")) {
            config = Some(path.into());
        } else {
            rest.push(arg.clone());
        }
    }
    let Some(config) = config else {
        return Ok(argv);
    };
    let mut out: Vec<OsString> = argv[..=run_at].to_vec();
    out.extend(arguments(Path::new(&config))?);
    out.extend(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_systemd_config_is_accepted() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd/map-audit.toml");
        let args: Vec<String> = arguments(&path)
            .unwrap()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert!(args.contains(&"--all".to_string()), "{args:?}");
        let output = args.iter().position(|a| a == "--output").unwrap();
        assert_eq!(args[output + 1], "/var/log/map-audit/events.jsonl");
    }

    #[test]
    fn keys_that_need_or_exclude_others_are_checked_together() {
        let dir = std::env::temp_dir().join(format!("map-audit-rearm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "pid = [1]\nrearm_interval = 2\nrearm_budget = \"500/s\"\n",
        )
        .unwrap();
        let parse = |path: &Path| {
            let argv = ["map-audit", "run", "--config", path.to_str().unwrap()].map(OsString::from);
            <Cli as clap::Parser>::try_parse_from(expand(argv.to_vec()).unwrap())
        };
        let crate::commands::cli::Command::Run(run) = parse(&path).unwrap().command else {
            panic!("not run");
        };
        assert_eq!(run.rearm_interval, Some(std::time::Duration::from_secs(2)));
        assert_eq!(run.rearm_budget, Some(500));
        std::fs::write(&path, "all = true\nrearm_interval = 2\n").unwrap();
        let err = parse(&path).map(drop).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ArgumentConflict);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn flags_after_the_file_win() {
        let dir = std::env::temp_dir().join(format!("map-audit-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, "all = true\nstats_interval = 5\n").unwrap();
        let argv: Vec<OsString> = [
            "map-audit",
            "run",
            "--config",
            path.to_str().unwrap(),
            "--stats-interval",
            "7",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let expanded = expand(argv).unwrap();
        let cli = <Cli as clap::Parser>::try_parse_from(expanded).unwrap();
        let crate::commands::cli::Command::Run(run) = cli.command else {
            panic!("not run");
        };
        assert!(run.all);
        assert_eq!(run.stats_interval, 7);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
