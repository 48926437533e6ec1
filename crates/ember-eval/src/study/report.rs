//! What a study reports: every row as CSV, each method's best Fréchet distance as a markdown
//! table, and the Pareto plot of the methods' trade-offs.

use super::StudyFile;
use crate::ScaleRow;
use crate::eval::{EvalError, MetricColumns};
use ember_monitor::plot::{Panel, Series, write_xy_panels};
use std::path::Path;

/// One line per (method, scale), methods in study order, scales ascending; the `fid` and
/// `cas` columns only when the study computed them (as the sweep's `eval.csv`).
pub fn to_csv(file: &StudyFile) -> String {
    let columns = MetricColumns::of(&file.settings);
    let mut out = format!("method,scale,{}\n", columns.header());
    for m in &file.methods {
        for r in &m.rows {
            out.push_str(&format!("{},{},{}\n", m.name, r.scale, columns.fields(r)));
        }
    }
    out
}

/// The row of lowest (finite) Fréchet distance.
pub fn best_fd(rows: &[ScaleRow]) -> Option<&ScaleRow> {
    rows.iter()
        .filter(|r| r.fd.is_finite())
        .min_by(|a, b| a.fd.total_cmp(&b.fd))
}

/// A markdown table: each method's best FD, the scale it is reached at, and the accuracy and
/// recall there (and the CAS, when computed); the real data's last.
pub fn best_fd_table(file: &StudyFile) -> String {
    let with_cas = file.settings.cas.is_some();
    let cas = |v: Option<f64>| match with_cas {
        true => format!(
            " {} |",
            v.map(|v| format!("{v:.4}")).unwrap_or_else(|| "n/a".into())
        ),
        false => String::new(),
    };
    let mut out = String::from("| method | best FD | at scale | accuracy | recall |");
    out.push_str(if with_cas { " CAS |\n" } else { "\n" });
    out.push_str("|---|---:|---:|---:|---:|");
    out.push_str(if with_cas { "---:|\n" } else { "\n" });
    for m in &file.methods {
        match best_fd(&m.rows) {
            Some(r) => out.push_str(&format!(
                "| {} | {:.4} | {} | {:.4} | {:.4} |{}\n",
                m.name,
                r.fd,
                ember_config::scale_label(r.scale),
                r.accuracy,
                r.recall,
                cas(r.cas)
            )),
            None => out.push_str(&format!(
                "| {} | n/a | | | |{}\n",
                m.name,
                if with_cas { " |" } else { "" }
            )),
        }
    }
    let r = &file.reference;
    out.push_str(&format!(
        "| real data (floor) | {:.4} | | {:.4} | {:.4} |{}\n",
        r.fd,
        r.accuracy,
        r.recall,
        cas(r.cas)
    ));
    out
}

/// `study.png`: FD against class accuracy, and precision against recall, a line per method
/// through its scales in ascending order, and the real data as a point.
pub fn write_plot(file: &StudyFile, path: &Path) -> Result<(), EvalError> {
    let panel = |title: &str, y_label: &str, point: &dyn Fn(&ScaleRow) -> (f64, f64)| {
        let r = &file.reference;
        let mut series: Vec<Series> = file
            .methods
            .iter()
            .map(|m| Series {
                name: m.name.clone(),
                points: m.rows.iter().map(point).collect(),
            })
            .collect();
        // the real data's own metrics, as a row of its own
        let real = ScaleRow {
            scale: f64::NAN,
            accuracy: r.accuracy,
            fd: r.fd,
            precision: r.precision,
            recall: r.recall,
            diversity: r.diversity,
            fid: r.fid,
            cas: r.cas,
            samples: r.images,
            seconds: 0.0,
        };
        series.push(Series {
            name: "real data".into(),
            points: vec![point(&real)],
        });
        Panel {
            title: title.into(),
            y_label: y_label.into(),
            series,
            markers: true,
        }
    };
    let panels = [
        (
            "class accuracy",
            panel(
                "FD against class accuracy (lower right is better)",
                "FD (classifier features)",
                &|r| (r.accuracy, r.fd),
            ),
        ),
        (
            "recall",
            panel(
                "precision against recall (upper right is better)",
                "precision",
                &|r| (r.recall, r.precision),
            ),
        ),
    ];
    write_xy_panels(path, &panels, 2)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Reference;
    use crate::eval::{EvalSettings, FORMAT_VERSION};
    use crate::study::MethodResult;

    fn row(scale: f64, fd: f64) -> ScaleRow {
        ScaleRow {
            scale,
            accuracy: 0.5 + scale / 10.0,
            fd,
            precision: 0.75,
            recall: 0.25,
            diversity: 2.0,
            fid: None,
            cas: None,
            samples: 20,
            seconds: 1.0,
        }
    }

    fn file() -> StudyFile {
        StudyFile {
            settings: EvalSettings {
                format_version: FORMAT_VERSION,
                weights: "w".into(),
                num_classes: 10,
                samples_per_class: 2,
                sampling: Default::default(),
                classifier: "c".into(),
                features: "c".into(),
                k: 3,
                fid: None,
                guidance_classifier: None,
                cas: None,
            },
            reference: Reference {
                images: 20,
                test_images: 64,
                accuracy: 1.0,
                fd: 0.5,
                precision: 0.9,
                recall: 0.8,
                diversity: 3.0,
                fid: None,
                cas: None,
            },
            methods: vec![
                MethodResult {
                    name: "cfg".into(),
                    sampling: Default::default(),
                    guidance_classifier: None,
                    rows: vec![row(1.0, 4.0), row(3.0, 2.5), row(5.0, f64::NAN)],
                },
                MethodResult {
                    name: "apg".into(),
                    sampling: Default::default(),
                    guidance_classifier: None,
                    rows: vec![],
                },
            ],
        }
    }

    #[test]
    fn the_table_names_each_methods_best_fd_and_the_csv_every_row() {
        let f = file();
        assert_eq!(
            best_fd_table(&f),
            "| method | best FD | at scale | accuracy | recall |\n\
             |---|---:|---:|---:|---:|\n\
             | cfg | 2.5000 | 3 | 0.8000 | 0.2500 |\n\
             | apg | n/a | | | |\n\
             | real data (floor) | 0.5000 | | 1.0000 | 0.8000 |\n"
        );
        let csv = to_csv(&f);
        assert_eq!(csv.lines().count(), 4);
        assert!(csv.starts_with("method,scale,accuracy,fd,precision,recall,diversity,samples"));
        assert!(
            csv.contains("\ncfg,3,0.8,2.5,0.75,0.25,2,20,1.000\n"),
            "{csv}"
        );
        let path = std::env::temp_dir().join(format!("ember-study-{}.png", std::process::id()));
        write_plot(&f, &path).unwrap();
        assert!(ember_io::read_png(&path).is_ok());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_study_with_cas_has_a_cas_column_in_the_csv_and_the_table() {
        let mut f = file();
        f.settings.cas = Some(Default::default());
        f.reference.cas = Some(0.95);
        for (r, cas) in f.methods[0].rows.iter_mut().zip([0.5, 0.75, 0.25]) {
            r.cas = Some(cas);
        }
        assert_eq!(
            best_fd_table(&f),
            "| method | best FD | at scale | accuracy | recall | CAS |\n\
             |---|---:|---:|---:|---:|---:|\n\
             | cfg | 2.5000 | 3 | 0.8000 | 0.2500 | 0.7500 |\n\
             | apg | n/a | | | | |\n\
             | real data (floor) | 0.5000 | | 1.0000 | 0.8000 | 0.9500 |\n"
        );
        let csv = to_csv(&f);
        assert!(
            csv.starts_with(
                "method,scale,accuracy,fd,precision,recall,diversity,cas,samples,seconds\n"
            ),
            "{csv}"
        );
        assert!(
            csv.contains("\ncfg,3,0.8,2.5,0.75,0.25,2,0.75,20,1.000\n"),
            "{csv}"
        );
    }
}
