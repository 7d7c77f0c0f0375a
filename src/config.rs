//! The configuration file (`--config keel.toml`, `KEEL_CONFIG`): every setting that has an
//! environment variable, under that variable's name in snake case without `KEEL_`
//! (`KEEL_LISTEN` is `listen`, `DATABASE_URL` is `database_url`).
//!
//! Nothing here lists the settings: the keys are read off clap's own metadata (each argument's
//! `env`), so a setting added to `cli::Settings` with an environment variable is a key of the
//! file at once. A file's value becomes the argument's default, so the order is the one clap
//! already keeps: a flag overrides the environment, which overrides the file, which overrides
//! the built-in default. Every value goes through the argument's own parser before start-up,
//! and an error names the key, its variable and the file's line.

use crate::cli::{Cli, Command as Sub, ConfigCmd};
use anyhow::{Context, bail};
use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Command, CommandFactory, FromArgMatches, Parser};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The key of the setting whose environment variable is `env`.
pub fn key_of(env: &str) -> String {
    env.strip_prefix("KEEL_").unwrap_or(env).to_ascii_lowercase()
}

/// The file's own key: a file cannot name another file.
const CONFIG_KEY: &str = "config";

/// One value of the file.
#[derive(Debug, Clone)]
pub struct FileValue {
    pub key: String,
    pub value: String,
    /// 1-based line of the key.
    pub line: usize,
}

/// The settings a file may hold: every argument of `cmd` and of its subcommands that has an
/// environment variable, with the command it belongs to.
fn env_args(cmd: &Command) -> Vec<(&Command, &Arg)> {
    let mut out = Vec::new();
    for arg in cmd.get_arguments() {
        if let Some(env) = arg.get_env()
            && key_of(&env.to_string_lossy()) != CONFIG_KEY
        {
            out.push((cmd, arg));
        }
    }
    for sub in cmd.get_subcommands() {
        out.extend(env_args(sub));
    }
    out
}

/// Every key a file may hold, sorted.
pub fn keys(cmd: &Command) -> Vec<String> {
    let mut keys: Vec<String> =
        env_args(cmd).iter().filter_map(|(_, a)| a.get_env().map(|e| key_of(&e.to_string_lossy()))).collect();
    keys.sort();
    keys.dedup();
    keys
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

/// Reads and checks the file at `path` against the settings of `cmd`: it must be TOML, hold only
/// keys of settings, each a string, number or boolean its setting's parser accepts.
pub fn load(cmd: &Command, path: &Path) -> anyhow::Result<Vec<FileValue>> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the configuration file {shown}"))?;
    check(cmd, &shown.to_string(), &text)
}

/// `load` of a file's text; `name` is how errors name the file.
pub fn check(cmd: &Command, name: &str, text: &str) -> anyhow::Result<Vec<FileValue>> {
    let doc = match toml_edit::Document::parse(text) {
        Ok(d) => d,
        Err(e) => {
            let line = e.span().map_or(1, |s| line_of(text, s.start));
            bail!("{name} line {line}: not valid TOML: {}", e.message().trim());
        }
    };
    let settings = env_args(cmd);
    let mut values = Vec::new();
    let mut unknown = Vec::new();
    for (key, item) in doc.as_table().iter() {
        let line = doc
            .as_table()
            .get_key_value(key)
            .and_then(|(k, _)| k.span())
            .or_else(|| item.span())
            .map_or(1, |s| line_of(text, s.start));
        let Some((_, arg)) =
            settings.iter().find(|(_, a)| a.get_env().is_some_and(|e| key_of(&e.to_string_lossy()) == key))
        else {
            unknown.push(format!("{key} (line {line})"));
            continue;
        };
        let env = arg.get_env().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default();
        let value = match item.as_value() {
            Some(toml_edit::Value::String(s)) => s.value().clone(),
            Some(toml_edit::Value::Integer(i)) => i.value().to_string(),
            Some(toml_edit::Value::Float(f)) => f.value().to_string(),
            Some(toml_edit::Value::Boolean(b)) => b.value().to_string(),
            _ => bail!("{name} line {line}: {key} ({env}): must be a string, a number or a boolean"),
        };
        if let Err(e) = parses(arg, &value) {
            // A secret's value is never repeated, even in an error.
            let why = if arg.is_hide_env_values_set() { "invalid value".to_owned() } else { e };
            bail!("{name} line {line}: {key} ({env}): {why}");
        }
        values.push(FileValue { key: key.to_owned(), value, line });
    }
    if !unknown.is_empty() {
        bail!(
            "{name}: unknown key{} {}; the keys are the environment variables in snake case without KEEL_: {}",
            if unknown.len() == 1 { "" } else { "s" },
            unknown.join(", "),
            keys(cmd).join(", ")
        );
    }
    Ok(values)
}

/// Whether `arg`'s own parser (and possible values) accept `value`, as clap would parse it: the
/// argument alone in a command of its own, given `value` on the command line. A flag that
/// takes no value is `true` or `false`.
fn parses(arg: &Arg, value: &str) -> Result<(), String> {
    if !arg.get_action().takes_values() {
        return match value {
            "true" | "false" => Ok(()),
            _ => Err(format!("invalid value '{value}': must be true or false")),
        };
    }
    let alone = arg
        .clone()
        .global(false)
        .required(false)
        .requires(clap::builder::Resettable::Reset)
        .conflicts_with(clap::builder::Resettable::Reset)
        .default_values(Vec::<&'static str>::new());
    let given = match arg.get_long() {
        Some(long) => format!("--{long}={value}"),
        None => value.to_owned(),
    };
    let check = Command::new("keel").no_binary_name(true).arg(alone);
    match check.try_get_matches_from([given]) {
        Ok(_) => Ok(()),
        Err(e) => {
            let msg = e.to_string();
            let msg = msg.lines().next().unwrap_or("").trim();
            Err(msg.strip_prefix("error: ").unwrap_or(msg).to_owned())
        }
    }
}

/// `cmd` with the file's values as the defaults of their settings (in every subcommand too).
pub fn apply(mut cmd: Command, values: &[FileValue]) -> Command {
    let ids: Vec<(String, String, bool)> = cmd
        .get_arguments()
        .filter_map(|a| {
            let key = key_of(&a.get_env()?.to_string_lossy());
            let v = values.iter().find(|v| v.key == key)?;
            Some((a.get_id().to_string(), v.value.clone(), a.is_hide_env_values_set()))
        })
        .collect();
    for (id, value, secret) in ids {
        // Leaked once at start-up: clap keeps defaults as static strings.
        let value: &'static str = Box::leak(value.into_boxed_str());
        cmd = cmd.mut_arg(id, |a| a.default_value(value).hide_default_value(secret));
    }
    let subs: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_owned()).collect();
    for name in subs {
        cmd = cmd.mut_subcommand(name, |s| apply(s, values));
    }
    cmd
}

/// The command line as parsed, with the configuration file (when there is one) under it.
pub struct Parsed {
    pub cli: Cli,
    pub matches: ArgMatches,
    /// The file and the values it gave.
    pub file: Option<(PathBuf, Vec<FileValue>)>,
}

/// Parses `args` (and the environment) with the file of `--config`/`KEEL_CONFIG` (or of
/// `keel config check FILE`) under them. A command-line error exits as clap does; a file that
/// cannot be read or holds a bad value is an error.
pub fn parse_from(args: Vec<OsString>) -> anyhow::Result<Parsed> {
    let first = Cli::try_parse_from(args.clone()).unwrap_or_else(|e| exit_naming_the_variable(e));
    let path = match &first.command {
        Sub::Config { command: ConfigCmd::Check { file } } => Some(file.clone()),
        _ => first.settings.config.clone(),
    };
    let Some(path) = path else {
        let matches = Cli::command().get_matches_from(args);
        return Ok(Parsed { cli: first, matches, file: None });
    };
    let values = load(&Cli::command(), &path)?;
    let matches = apply(Cli::command(), &values).get_matches_from(args);
    let cli = Cli::from_arg_matches(&matches).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Parsed { cli, matches, file: Some((path, values)) })
}

/// Exits as clap does on a command-line error; when the bad value came from an environment
/// variable, the message names the variable first (clap's own names only the flag). A secret's
/// value is not repeated.
fn exit_naming_the_variable(e: clap::Error) -> ! {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if matches!(e.kind(), ErrorKind::InvalidValue | ErrorKind::ValueValidation)
        && let (Some(ContextValue::String(flag)), Some(ContextValue::String(value))) =
            (e.get(ContextKind::InvalidArg), e.get(ContextKind::InvalidValue))
    {
        let cmd = Cli::command();
        let from_env = env_args(&cmd).into_iter().find_map(|(_, a)| {
            let long = a.get_long()?;
            let env = a.get_env()?.to_string_lossy().into_owned();
            let set = std::env::var(&env).ok()?;
            (flag.starts_with(&format!("--{long} ")) && set == *value).then_some((env, a.is_hide_env_values_set()))
        });
        if let Some((env, secret)) = from_env {
            let why = e.to_string();
            let why = why.lines().next().unwrap_or("").trim();
            let why = why.strip_prefix("error: ").unwrap_or(why);
            if secret {
                eprintln!("keel: the environment variable {env} holds an invalid value");
            } else {
                eprintln!("keel: the environment variable {env}: {why}");
            }
            std::process::exit(1);
        }
    }
    e.exit()
}

/// The effective global settings, one `key = value  # source` line each, secrets redacted
/// (`database_url` shows where it points, without its password).
pub fn effective(parsed: &Parsed) -> String {
    let cmd = Cli::command();
    let from_file: Vec<&str> =
        parsed.file.as_ref().map(|(_, v)| v.iter().map(|v| v.key.as_str()).collect()).unwrap_or_default();
    let mut out = String::new();
    for arg in cmd.get_arguments() {
        let Some(env) = arg.get_env() else { continue };
        let env = env.to_string_lossy();
        let key = key_of(&env);
        if key == CONFIG_KEY {
            continue;
        }
        let id = arg.get_id().as_str();
        let raw: Option<String> = parsed
            .matches
            .get_raw(id)
            .map(|vals| vals.map(|v| v.to_string_lossy().into_owned()).collect::<Vec<_>>().join(","));
        let source = match parsed.matches.value_source(id) {
            Some(ValueSource::CommandLine) => "flag".to_owned(),
            Some(ValueSource::EnvVariable) => format!("environment {env}"),
            Some(ValueSource::DefaultValue) if from_file.contains(&key.as_str()) => "file".to_owned(),
            Some(_) => "default".to_owned(),
            None => "unset".to_owned(),
        };
        let value = match raw {
            None => "(unset)".to_owned(),
            Some(v) if arg.is_hide_env_values_set() => redacted(arg, &v),
            Some(v) => format!("{v:?}"),
        };
        out.push_str(&format!("{key} = {value}  # {source}\n"));
    }
    out
}

/// A secret as `config check` shows it: a setting of type `DatabaseUrl` as its `Debug` shows
/// it (without password or query), any other secret not at all.
fn redacted(arg: &Arg, v: &str) -> String {
    if arg.get_value_parser().type_id() == std::any::TypeId::of::<crate::DatabaseUrl>() {
        let shown = format!("{:?}", crate::DatabaseUrl::from(v));
        if let Some(inner) = shown.strip_prefix("DatabaseUrl(").and_then(|s| s.strip_suffix(')'))
            && inner.starts_with('"')
        {
            return inner.to_owned();
        }
    }
    "\"[redacted]\"".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value `arg`'s own parser accepts: its default, else its first possible value, else one
    /// of a few samples.
    fn sample(arg: &Arg) -> String {
        let mut candidates: Vec<String> = arg.get_default_values().iter().map(|v| v.to_string_lossy().into()).collect();
        candidates.extend(arg.get_possible_values().iter().map(|p| p.get_name().to_owned()));
        candidates.extend(
            ["7", "true", "x", "postgres://u@h/db", "https://127.0.0.1/x", "0.0.0.0:1", "7s", "10/s", "10:20"]
                .map(String::from),
        );
        candidates
            .into_iter()
            .find(|c| parses(arg, c).is_ok())
            .unwrap_or_else(|| panic!("no sample value for {}", arg.get_id()))
    }

    /// Walks every argument of `keel` that has an environment variable (in every subcommand) and
    /// shows that the file takes it under its key and that the parse sees the file's value.
    #[test]
    fn every_setting_with_an_environment_variable_is_a_key_of_the_file() {
        let cmd = Cli::command();
        let settings = env_args(&cmd);
        assert!(settings.len() >= 20, "the walk finds the settings: {}", settings.len());
        let mut text = String::new();
        let mut expected = Vec::new();
        for (owner, arg) in &settings {
            let env = arg.get_env().unwrap().to_string_lossy().into_owned();
            let key = key_of(&env);
            if expected.iter().any(|(k, _, _): &(String, String, String)| *k == key) {
                continue;
            }
            let value = sample(arg);
            // A TOML literal string: the samples hold no quote.
            text.push_str(&format!("{key} = '{value}'\n"));
            expected.push((key, value, owner.get_name().to_owned()));
        }
        let values = check(&cmd, "test.toml", &text).expect("every key is accepted");
        assert_eq!(values.len(), expected.len());
        for (i, (key, value, _)) in expected.iter().enumerate() {
            let v = values.iter().find(|v| v.key == *key).unwrap_or_else(|| panic!("{key} read"));
            assert_eq!(v.value, *value, "{key}");
            assert_eq!(v.line, i + 1, "{key}'s line");
        }
        // The file's values are the defaults of the parse, in the root and in each subcommand.
        let applied = apply(Cli::command(), &values);
        for (owner, arg) in &settings {
            let key = key_of(&arg.get_env().unwrap().to_string_lossy());
            let (_, value, _) = expected.iter().find(|(k, _, _)| *k == key).unwrap();
            let target =
                if owner.get_name() == "keel" { &applied } else { applied.find_subcommand(owner.get_name()).unwrap() };
            let a = target.get_arguments().find(|a| a.get_id() == arg.get_id()).unwrap();
            let defaults: Vec<String> = a.get_default_values().iter().map(|v| v.to_string_lossy().into()).collect();
            assert_eq!(defaults, vec![value.clone()], "{key} takes the file's value as its default");
        }
    }

    #[test]
    fn the_keys_are_the_environment_names_in_snake_case() {
        assert_eq!(key_of("KEEL_LISTEN"), "listen");
        assert_eq!(key_of("DATABASE_URL"), "database_url");
        let keys = keys(&Cli::command());
        for k in ["database_url", "listen", "jwt_secret", "master_key", "data_dir", "log_format", "body_limit"] {
            assert!(keys.iter().any(|x| x == k), "{k} in {keys:?}");
        }
        assert!(!keys.iter().any(|x| x == "config"), "the file cannot name a file");
    }

    #[test]
    fn a_bad_value_names_the_key_the_variable_and_the_line() {
        let e = check(&Cli::command(), "k.toml", "listen = \"127.0.0.1:1\"\n\nbody_limit = \"lots\"\n").unwrap_err();
        let e = e.to_string();
        assert!(e.contains("k.toml line 3") && e.contains("body_limit") && e.contains("KEEL_BODY_LIMIT"), "{e}");
        let e = check(&Cli::command(), "k.toml", "log_format = \"xml\"\n").unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("log_format"), "{e}");
        let e = check(&Cli::command(), "k.toml", "body_limit = [1]\n").unwrap_err().to_string();
        assert!(e.contains("must be a string, a number or a boolean"), "{e}");
        let e = check(&Cli::command(), "k.toml", "listen = \n").unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("not valid TOML"), "{e}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = check(
            &Cli::command(),
            "k.toml",
            "listen = \"x:1\"\nkeel_listen = \"y\"\nlisten_port = 1\nconfig = \"a\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("keel_listen (line 2)") && e.contains("listen_port (line 3)"), "{e}");
        assert!(e.contains("config (line 4)"), "{e}");
    }

    #[test]
    fn the_effective_settings_show_no_secret() {
        let dir = std::env::temp_dir().join(format!("keel-config-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("keel.toml");
        std::fs::write(
            &file,
            "database_url = \"postgres://keel:pw-never-shown@db:5432/keel?sslpassword=q-never-shown\"\n\
             jwt_secret = \"jwt-never-shown-0123456789abcdef0123\"\n\
             master_key = \"postgres://master-never-shown\"\nbody_limit = 77\n\
             redis_url = \"redis://:redis-never-shown@127.0.0.1:6379\"\n",
        )
        .unwrap();
        let parsed = parse_from(
            ["keel", "--listen", "127.0.0.1:9", "config", "check", file.to_str().unwrap()].map(OsString::from).to_vec(),
        )
        .unwrap();
        let shown = effective(&parsed);
        for secret in ["pw-never-shown", "q-never-shown", "jwt-never-shown", "master-never-shown", "redis-never-shown"]
        {
            assert!(!shown.contains(secret), "{shown}");
        }
        if std::env::var_os("DATABASE_URL").is_none() {
            assert!(shown.contains("database_url = \"postgres://keel:***@db:5432/keel?***\"  # file"), "{shown}");
        }
        assert!(shown.contains("body_limit = \"77\"  # file"), "{shown}");
        assert!(shown.contains("listen = \"127.0.0.1:9\"  # flag"), "{shown}");
        assert_eq!(parsed.cli.settings.body_limit, 77);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
