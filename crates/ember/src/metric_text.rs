//! How the optional metrics print after the others on a progress line: `, FID 12.3456`,
//! `, CAS 0.9123`, or nothing when not computed. `eval_cmd.rs` and `study_cmd.rs` share them.

pub(crate) fn fid_text(fid: Option<f64>) -> String {
    fid.map(|f| format!(", FID {f:.4}")).unwrap_or_default()
}

pub(crate) fn cas_text(cas: Option<f64>) -> String {
    cas.map(|c| format!(", CAS {c:.4}")).unwrap_or_default()
}
