//! The resume rules, written once: which fields of a [`TrainConfig`] a resumed run may
//! change, applied and checked by [`resumed_config`]. The library calls it for every
//! resume; the command line calls it at parse time, so a conflicting flag is reported
//! against its name before anything runs.

use super::{TrainConfig, TrainError};
use serde_json::Value;
use std::path::Path;

/// The fields (their `config.json` names) a resumed run may change: how long it trains
/// (`epochs`), its base learning rate (`lr`: to continue after a divergence), whether the
/// divergence rule stops it, on how many threads, when this invocation stops, where its
/// data is when the saved run recorded none, and the request flags themselves. Every other
/// field is the saved run's. A change is recorded in `config.json`'s `history`.
pub const RESUMABLE_FIELDS: [&str; 9] = [
    "epochs",
    "lr",
    "allow_divergence",
    "threads",
    "stop_after",
    "data_dir",
    "resume",
    "overwrite",
    "allow_rank_change",
];

/// Whether `a` and `b` describe the same run: equal in every field but the resumable ones
/// and the output directory.
pub fn same_run(a: &TrainConfig, b: &TrainConfig) -> bool {
    let identity = |c: &TrainConfig| {
        let mut v = as_json(c);
        if let Some(fields) = v.as_object_mut() {
            for f in RESUMABLE_FIELDS.iter().chain(&["out"]) {
                fields.remove(*f);
            }
        }
        v
    };
    identity(a) == identity(b)
}

/// The configuration resuming the run saved in `dir` (whose configuration is `saved`)
/// trains with, for the request `request`.
///
/// `given(field)` says whether the request sets a field (`lr`, `loss.beta`; `out`): the
/// command line passes the flags it was given, a library caller `|_| true`. A given field
/// outside [`RESUMABLE_FIELDS`] must equal the saved value (repeating it is fine), and a
/// given `out` must be `dir` (or the directory the run recorded); otherwise the result is a [`TrainError::ResumeConflict`]
/// naming the field and the saved value. The result is `saved` with `epochs` (when given),
/// `threads` (when set), `stop_after` and `resume` from the request, and the request's
/// `data_dir` where the saved run recorded none.
///
/// ```
/// use std::path::Path;
/// use tensorgrad::train::{resume::resumed_config, TrainConfig};
///
/// let saved = TrainConfig { batch_size: 64, epochs: 5, ..TrainConfig::default() };
/// let more = TrainConfig { epochs: 8, lr: 0.005, ..saved.clone() };
/// let dir = Path::new("runs/a");
/// let resumed = resumed_config(&saved, &more, dir, &|_| true).unwrap();
/// assert_eq!((resumed.epochs, resumed.lr), (8, 0.005));
/// let other_batch = TrainConfig { batch_size: 128, ..saved.clone() };
/// let e = resumed_config(&saved, &other_batch, dir, &|_| true).unwrap_err();
/// assert!(e.to_string().starts_with("batch_size: the resumed run was trained with 64"));
/// // Not given (a default the caller did not choose): the saved value stands.
/// let kept = resumed_config(&saved, &other_batch, dir, &|f| f != "batch_size").unwrap();
/// assert_eq!(kept.batch_size, 64);
/// ```
pub fn resumed_config(
    saved: &TrainConfig,
    request: &TrainConfig,
    dir: &Path,
    given: &dyn Fn(&str) -> bool,
) -> Result<TrainConfig, TrainError> {
    if let Some(out) = &request.out {
        // The run's own directory, as resumed or as it recorded itself, is no change.
        if given("out") && out != dir && Some(out) != saved.out.as_ref() {
            return Err(TrainError::ResumeConflict {
                field: "out".into(),
                reason: format!("a resumed run stays in {}", dir.display()),
            });
        }
    }
    let (now, then) = (as_json(request), as_json(saved));
    for (field, value) in fields(&now) {
        if field == "out" || RESUMABLE_FIELDS.contains(&field.as_str()) || !given(&field) {
            continue;
        }
        let was = lookup(&then, &field);
        if was != Some(&value) {
            return Err(TrainError::ResumeConflict {
                reason: format!(
                    "the resumed run was trained with {}; a resumed run keeps its configuration",
                    was.map_or("no value".into(), Value::to_string)
                ),
                field,
            });
        }
    }
    let mut config = saved.clone();
    if given("epochs") {
        config.epochs = request.epochs;
    }
    if given("lr") {
        config.lr = request.lr;
    }
    if given("allow_divergence") {
        config.allow_divergence = request.allow_divergence;
    }
    config.allow_rank_change = request.allow_rank_change;
    config.threads = request.threads.or(saved.threads);
    config.data_dir = saved.data_dir.clone().or_else(|| request.data_dir.clone());
    config.stop_after = request.stop_after;
    config.resume = Some(dir.to_path_buf());
    Ok(config)
}

/// The fields (`config.json` names, the loss's options as `loss.<option>`) whose values
/// differ between `then` and `now`, each as `[then's, now's]` (`null` where one lacks it).
pub fn changed_fields(then: &TrainConfig, now: &TrainConfig) -> serde_json::Map<String, Value> {
    let (then, now) = (as_json(then), as_json(now));
    let mut names: Vec<String> = fields(&then)
        .into_iter()
        .chain(fields(&now))
        .map(|(name, _)| name)
        .collect();
    names.sort();
    names.dedup();
    let value = |v: &Value, field: &str| lookup(v, field).cloned().unwrap_or(Value::Null);
    names
        .into_iter()
        .filter_map(|field| {
            let (was, is) = (value(&then, &field), value(&now, &field));
            (was != is).then(|| (field, serde_json::json!([was, is])))
        })
        .collect()
}

fn as_json(config: &TrainConfig) -> Value {
    serde_json::to_value(config).expect("configs serialise")
}

/// Every field as `(name, value)`, the loss's options as `loss.<option>`.
fn fields(v: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (key, value) in v.as_object().into_iter().flatten() {
        match value.as_object() {
            Some(inner) if key == "loss" => {
                for (k, v) in inner {
                    out.push((format!("loss.{k}"), v.clone()));
                }
            }
            _ => out.push((key.clone(), value.clone())),
        }
    }
    out
}

fn lookup<'a>(v: &'a Value, field: &str) -> Option<&'a Value> {
    match field.split_once('.') {
        Some((outer, inner)) => v.get(outer)?.get(inner),
        None => v.get(field),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::LossKind;

    #[test]
    fn resumable_fields_change_and_the_rest_must_agree() {
        let saved = TrainConfig {
            data_dir: None,
            threads: Some(2),
            ..TrainConfig::default()
        };
        let dir = Path::new("runs/r");
        let all = |_: &str| true;
        let request = TrainConfig {
            epochs: 9,
            threads: None,
            stop_after: Some(1),
            data_dir: Some("data".into()),
            out: Some(dir.to_path_buf()),
            overwrite: true,
            ..saved.clone()
        };
        let c = resumed_config(&saved, &request, dir, &all).unwrap();
        assert_eq!(c.epochs, 9);
        assert_eq!(c.threads, Some(2), "threads not set: the saved value");
        assert_eq!(c.stop_after, Some(1));
        assert_eq!(c.data_dir.as_deref(), Some(Path::new("data")));
        assert_eq!(c.resume.as_deref(), Some(dir));
        assert!(
            !c.overwrite,
            "overwrite is the request's business, not the run's"
        );
        // A loss option, the loss itself, the seed: refused, naming the field.
        let mut beta = saved.clone();
        beta.loss.beta = Some(3.0);
        let e = resumed_config(&saved, &beta, dir, &all).unwrap_err();
        assert!(e.to_string().starts_with("loss.beta: "), "{e}");
        let mut loss = saved.clone();
        loss.loss.loss = "sml".parse::<LossKind>().unwrap();
        assert!(resumed_config(&saved, &loss, dir, &all).is_err());
        let seed = TrainConfig {
            seed: 7,
            ..saved.clone()
        };
        let e = resumed_config(&saved, &seed, dir, &all).unwrap_err();
        assert_eq!(
            e.to_string(),
            "seed: the resumed run was trained with 0; a resumed run keeps its configuration"
        );
        // Another directory.
        let elsewhere = TrainConfig {
            out: Some("runs/other".into()),
            ..saved.clone()
        };
        let e = resumed_config(&saved, &elsewhere, dir, &all).unwrap_err();
        assert_eq!(e.to_string(), "out: a resumed run stays in runs/r");
        // Without epochs given, the saved length stands.
        let c = resumed_config(&saved, &request, dir, &|f| f != "epochs").unwrap();
        assert_eq!(c.epochs, saved.epochs);
    }
}
