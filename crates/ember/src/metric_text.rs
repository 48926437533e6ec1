//! How `ember eval` prints its metrics and sorts its errors, shared by the sweep
//! (`eval_cmd.rs`), the checkpoint curve and the study (`study_cmd.rs`).

use ember_eval::{EvalError, Reference, ScaleRow};

/// `, FID 12.3456`, or nothing when not computed.
pub(crate) fn fid_text(fid: Option<f64>) -> String {
    fid.map(|f| format!(", FID {f:.4}")).unwrap_or_default()
}

/// `, CAS 0.9123`, or nothing when not computed.
pub(crate) fn cas_text(cas: Option<f64>) -> String {
    cas.map(|c| format!(", CAS {c:.4}")).unwrap_or_default()
}

/// The real-data line printed before the first sampled set.
pub(crate) fn reference_line(r: &Reference) -> String {
    format!(
        "real data ({} training vs {} test images): accuracy {:.4}, FD floor {:.4}, precision {:.4}, recall {:.4}, diversity {:.4}{}{}",
        r.images,
        r.test_images,
        r.accuracy,
        r.fd,
        r.precision,
        r.recall,
        r.diversity,
        fid_text(r.fid).replace("FID", "FID floor"),
        cas_text(r.cas).replace("CAS", "CAS of real images"),
    )
}

/// Every metric of one scored set: `accuracy …, FD …, precision …, recall …, diversity …`
/// and FID/CAS when computed.
pub(crate) fn row_metrics(row: &ScaleRow) -> String {
    format!(
        "accuracy {:.4}, FD {:.4}, precision {:.4}, recall {:.4}, diversity {:.4}{}{}",
        row.accuracy,
        row.fd,
        row.precision,
        row.recall,
        row.diversity,
        fid_text(row.fid),
        cas_text(row.cas)
    )
}

/// Sorts an evaluation's error: changed settings, a bad request or an unreadable earlier
/// result file are the user's input (exit 2, as they are); anything else stopped the work
/// (`what` says which, e.g. "evaluation into runs/x/eval stopped").
pub(crate) fn input_or_work<T>(
    result: Result<T, EvalError>,
    what: impl FnOnce() -> String,
    stopped: &'static str,
) -> anyhow::Result<T> {
    use anyhow::Context;
    match result {
        Err(
            e @ (EvalError::SettingsChanged { .. }
            | EvalError::Request(_)
            | EvalError::Invalid { .. }),
        ) => Err(e.into()),
        other => other
            .with_context(what)
            .context(crate::WhileWorking(stopped)),
    }
}
