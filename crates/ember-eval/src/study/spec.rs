//! The study file: the guidance methods to compare, each with its scales and its overrides of
//! the `[sample]` table.
//!
//! ```toml
//! [[method]]
//! name = "apg"                 # a label, unique; also the folder of its grids
//! scales = [1, 3, 5, 8]
//! sample = { guidance_method = "apg", apg_eta = 0.0 }
//! ```
//!
//! Each method's settings are the base settings (the run's `[sample]` with the command's flags)
//! with its `sample` keys over them, parsed and validated as the config's own `[sample]` is:
//! an unknown key or a bad value is refused, naming the method and the key. A method may not
//! set `guidance_scale` (its scales are `scales`), `per_class` (the study's sample count rules)
//! or `seed` (every method samples from the same noise).

use ember_config::SampleConfig;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Most methods, and most scales per method, one study takes.
pub const MAX_METHODS: usize = 64;
pub const MAX_SCALES: usize = 64;

/// `[sample]` keys a method may not set, and why.
const FIXED_KEYS: [(&str, &str); 3] = [
    ("guidance_scale", "a method's scales are its `scales`"),
    (
        "per_class",
        "the study samples --samples-per-class images per class",
    ),
    ("seed", "every method samples from the same noise"),
];

#[derive(Debug, thiserror::Error)]
pub enum StudySpecError {
    #[error("cannot read study file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid study file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StudyToml {
    method: Vec<MethodToml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MethodToml {
    name: String,
    scales: Vec<f64>,
    #[serde(default)]
    sample: toml::Table,
}

/// One method of a study with its settings resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodSpec {
    pub name: String,
    pub scales: Vec<f64>,
    /// The base settings with the method's overrides, validated.
    pub sampling: SampleConfig,
}

/// Reads and resolves a study file against `base` (`timesteps` and `num_classes` are the
/// model's, as `SampleConfig::validate` takes them).
pub fn load_study(
    path: &Path,
    base: &SampleConfig,
    timesteps: usize,
    num_classes: usize,
) -> Result<Vec<MethodSpec>, StudySpecError> {
    let text = std::fs::read_to_string(path).map_err(|source| StudySpecError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_study(&text, path, base, timesteps, num_classes)
}

/// [`load_study`] of text; `path` only names the source in errors.
pub fn parse_study(
    text: &str,
    path: &Path,
    base: &SampleConfig,
    timesteps: usize,
    num_classes: usize,
) -> Result<Vec<MethodSpec>, StudySpecError> {
    let invalid = |message: String| StudySpecError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let study: StudyToml = toml::from_str(text)
        .map_err(|e| invalid(e.to_string().trim_end().replace('\n', "\n  ")))?;
    if study.method.is_empty() || study.method.len() > MAX_METHODS {
        return Err(invalid(format!(
            "expected 1 to {MAX_METHODS} [[method]] tables, got {}",
            study.method.len()
        )));
    }
    let mut methods: Vec<MethodSpec> = Vec::new();
    for m in study.method {
        let name = m.name;
        check_name(&name).map_err(|e| invalid(format!("method name {name:?}: {e}")))?;
        if methods.iter().any(|other| other.name == name) {
            return Err(invalid(format!("two methods are named \"{name}\"")));
        }
        let method_error = |message: String| invalid(format!("method \"{name}\": {message}"));
        let mut sampling = resolve(base, m.sample).map_err(&method_error)?;
        if m.scales.is_empty() || m.scales.len() > MAX_SCALES {
            return Err(method_error(format!(
                "`scales`: expected 1 to {MAX_SCALES} scales, got {}",
                m.scales.len()
            )));
        }
        for (i, &scale) in m.scales.iter().enumerate() {
            sampling
                .check_scale("scales", scale)
                .map_err(|e| method_error(format!("`scales`: {}", e.message)))?;
            if scale < 0.0 {
                return Err(method_error(format!(
                    "`scales`: expected scales >= 0, got {scale}"
                )));
            }
            if m.scales[..i].contains(&scale) {
                return Err(method_error(format!("`scales` lists {scale} twice")));
            }
        }
        // The base's scale is no row's: the method's first stands in for it.
        sampling.guidance_scale = m.scales[0];
        sampling
            .validate(timesteps, num_classes)
            .map_err(|e| method_error(format!("key `{}`: {}", e.key, e.message)))?;
        methods.push(MethodSpec {
            name,
            scales: m.scales,
            sampling,
        });
    }
    Ok(methods)
}

/// `base` with `overrides` over it, through the config's own parser (so unknown keys and
/// wrong types are refused as in a config file).
fn resolve(base: &SampleConfig, overrides: toml::Table) -> Result<SampleConfig, String> {
    let mut table = match toml::Value::try_from(base).expect("settings serialise") {
        toml::Value::Table(table) => table,
        _ => unreachable!("a struct serialises to a table"),
    };
    for (key, value) in overrides {
        if let Some((_, why)) = FIXED_KEYS.iter().find(|(fixed, _)| *fixed == key) {
            return Err(format!("`sample.{key}` cannot be set per method: {why}"));
        }
        table.insert(key, value);
    }
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| format!("`sample`: {}", e.message()))
}

/// A method's name is a folder name: 1 to 64 of `A-Z a-z 0-9 . _ + -`, not starting with `.`.
fn check_name(name: &str) -> Result<(), &'static str> {
    let ok = |c: char| c.is_ascii_alphanumeric() || "._+-".contains(c);
    if name.is_empty() || name.len() > 64 || name.starts_with('.') || !name.chars().all(ok) {
        return Err(
            "expected 1 to 64 letters, digits, '.', '_', '+' or '-', not starting with '.' (it names the method's folder)",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_config::GuidanceMethod;

    fn parse(text: &str) -> Result<Vec<MethodSpec>, String> {
        parse_study(
            text,
            Path::new("study.toml"),
            &SampleConfig::default(),
            1000,
            10,
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn methods_take_the_base_settings_with_their_overrides() {
        let base = SampleConfig {
            steps: 20,
            ..Default::default()
        };
        let text = r#"
            [[method]]
            name = "cfg"
            scales = [1, 2, 3]

            [[method]]
            name = "apg"
            scales = [3, 5.5]
            sample = { guidance_method = "apg", apg_eta = 0.0, apg_momentum = -0.5 }
        "#;
        let methods = parse_study(text, Path::new("s.toml"), &base, 1000, 10).unwrap();
        assert_eq!(methods.len(), 2);
        // the base, its scale replaced by the method's first
        let expected = SampleConfig {
            guidance_scale: 1.0,
            ..base.clone()
        };
        assert_eq!(methods[0].sampling, expected);
        assert_eq!(methods[0].scales, vec![1.0, 2.0, 3.0]);
        let apg = &methods[1].sampling;
        assert_eq!(apg.guidance_method, GuidanceMethod::Apg);
        assert_eq!((apg.apg_momentum, apg.steps), (-0.5, 20));
    }

    #[test]
    fn bad_studies_are_refused_by_method_and_key() {
        for (text, expected) in [
            ("", "missing field `method`"),
            (
                "[[method]]\nname = \"a\"\nscales = [1]\nscale = 2\n",
                "unknown field `scale`",
            ),
            (
                "[[method]]\nname = \"a\"\nscales = [1]\nsample = { apg_et = 0.0 }\n",
                "method \"a\": `sample`: unknown field `apg_et`",
            ),
            (
                "[[method]]\nname = \"a\"\nscales = [1]\nsample = { apg_eta = 2.0 }\n",
                "method \"a\": key `sample.apg_eta`",
            ),
            (
                "[[method]]\nname = \"a\"\nscales = [1]\n[[method]]\nname = \"b\"\nscales = [1, 2]\nsample = { guidance_method = \"cfg-pp\" }\n",
                "method \"b\": `scales`",
            ),
            (
                "[[method]]\nname = \"pp\"\nscales = [0.5, 2]\nsample = { guidance_method = \"cfg-pp\" }\n",
                "method \"pp\": `scales`: guidance_method \"cfg-pp\" takes lambda in [0, 1]",
            ),
            (
                "[[method]]\nname = \"a\"\nscales = [1]\nsample = { seed = 3 }\n",
                "`sample.seed` cannot be set per method",
            ),
            (
                "[[method]]\nname = \"a\"\nscales = [1]\nsample = { guidance_scale = 3 }\n",
                "`sample.guidance_scale` cannot be set per method",
            ),
            (
                "[[method]]\nname = \"a\"\nscales = []\n",
                "expected 1 to 64 scales",
            ),
            (
                "[[method]]\nname = \"a\"\nscales = [2, 2]\n",
                "lists 2 twice",
            ),
            (
                "[[method]]\nname = \"a\"\nscales = [-1]\n",
                "expected scales >= 0",
            ),
            (
                "[[method]]\nname = \"../up\"\nscales = [1]\n",
                "names the method's folder",
            ),
            (
                "[[method]]\nname = \"a\"\nscales = [1]\n[[method]]\nname = \"a\"\nscales = [2]\n",
                "two methods are named \"a\"",
            ),
            (
                "[[method]]\nname = \"auto\"\nscales = [2]\nsample = { guidance_method = \"autoguidance\" }\n",
                "method \"auto\": key `sample.guide_run`",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(expected), "{text}\n-> {err}");
            assert!(err.contains("study.toml"), "{err}");
        }
    }

    /// Every study in `configs/studies`, resolved against `base` (a file that does not resolve
    /// fails here), by file name.
    fn shipped_studies(base: &SampleConfig) -> Vec<(String, Vec<MethodSpec>)> {
        // At run time, not env!(): a test binary built in another clone sharing the target
        // directory is reused by cargo and would look in that clone.
        let manifest =
            std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into());
        let root = Path::new(&manifest).join("../../configs/studies");
        std::fs::read_dir(&root)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "toml"))
            .map(|path| {
                let methods = load_study(&path, base, 1000, 10).unwrap_or_else(|e| panic!("{e}"));
                (
                    path.file_name().unwrap().to_string_lossy().into_owned(),
                    methods,
                )
            })
            .collect()
    }

    #[test]
    fn the_shipped_example_study_resolves() {
        let studies = shipped_studies(&SampleConfig::default());
        let (_, methods) = studies
            .iter()
            .find(|(name, _)| name == "guidance-methods.toml")
            .expect("configs/studies/guidance-methods.toml");
        let kinds: Vec<GuidanceMethod> =
            methods.iter().map(|m| m.sampling.guidance_method).collect();
        for method in GuidanceMethod::ALL {
            assert!(
                kinds.contains(&method),
                "{method:?} missing from the example"
            );
        }
        assert!(
            methods
                .iter()
                .any(|m| !m.sampling.guidance_interval.is_empty())
        );
        let weak: Vec<_> = methods
            .iter()
            .filter(|m| m.sampling.guidance_method == GuidanceMethod::Autoguidance)
            .collect();
        assert_eq!(weak.len(), 2, "an early checkpoint and a smaller config");
    }

    #[test]
    fn the_shipped_interval_studies_resolve_to_distinct_intervals() {
        // Against a run whose own [sample] table guides in an interval, as the Fashion-MNIST
        // quality config's does: the studies' plain-CFG reference must still be plain.
        let base = SampleConfig {
            guidance_interval: vec![0.3, 2.0],
            ..SampleConfig::default()
        };
        let studies = shipped_studies(&base);
        let interval_studies: Vec<_> = studies
            .iter()
            .filter(|(name, _)| name.ends_with("-interval.toml"))
            .collect();
        assert_eq!(interval_studies.len(), 2, "MNIST's and Fashion-MNIST's");
        for (file, methods) in interval_studies {
            assert!(
                methods[0].sampling.guidance_interval.is_empty(),
                "{file}: CFG first"
            );
            let mut intervals: Vec<Vec<f64>> = methods[1..]
                .iter()
                .map(|m| m.sampling.guidance_interval.clone())
                .collect();
            assert!(
                intervals.iter().all(|i| i.len() == 2 && i[0] < i[1]),
                "{file}"
            );
            intervals.dedup();
            assert_eq!(intervals.len(), methods.len() - 1, "{file}: one per method");
        }
    }
}
