//! TensorBoard event files: scalars, images and text in one `events.out.tfevents.*` file per
//! process, written through `tensorboard-rs`.
//!
//! `tensorboard-rs` 0.5.9 frames records correctly (TFRecord, masked CRC32C) and its scalars
//! read back as written, but its image summary
//! - wants pixels interleaved height-major RGB (HWC), although its docs say CHW, and
//! - builds the picture as `dim[1]` wide and `dim[2]` high, then records them the other way
//!   round in the summary's `width`/`height` fields;
//!
//! and its text summary is unimplemented. [`EventLog::image`] feeds it what it actually wants
//! and corrects the recorded size; [`EventLog::text`] builds the text plugin's summary from
//! tensorboard-proto's messages. The tests below pin both quirks, so an upgrade that fixes
//! them fails loudly instead of silently transposing images.

use crate::MonitorError;
use ember_io::GridImage;
use protobuf::RepeatedField;
use std::path::{Path, PathBuf};
use tensorboard_proto::event::{Event, SessionLog, SessionLog_SessionStatus};
use tensorboard_proto::summary::{
    Summary, Summary_Value, SummaryMetadata, SummaryMetadata_PluginData,
};
use tensorboard_proto::tensor::TensorProto;
use tensorboard_proto::tensor_shape::{TensorShapeProto, TensorShapeProto_Dim};
use tensorboard_proto::types::DataType;
use tensorboard_rs::summary_writer::FileWriter;

/// An open event file. Records go to a background thread that appends them to the file, so a
/// call never waits for the disk; `Drop` (or [`EventLog::flush`]) drains it.
pub struct EventLog {
    writer: FileWriter,
    dir: PathBuf,
}

impl EventLog {
    /// Starts a new event file in `dir` (created if missing). TensorBoard reads every event
    /// file of a folder as one run, so a resumed run adds a file beside the earlier ones.
    pub fn create(dir: &Path) -> Result<Self, MonitorError> {
        // tensorboard-rs panics when it cannot create the folder; check first for a real error.
        std::fs::create_dir_all(dir).map_err(|source| MonitorError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(Self {
            writer: FileWriter::new(dir),
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Marks a (re)start at `step`: TensorBoard then drops the events of earlier files at this
    /// step and later, which a killed run wrote after its last checkpoint.
    pub fn restart_at(&mut self, step: usize) {
        let mut log = SessionLog::new();
        log.set_status(SessionLog_SessionStatus::START);
        let mut event = Event::new();
        event.set_session_log(log);
        self.writer.add_event(&event, step);
    }

    pub fn scalar(&mut self, tag: &str, step: usize, value: f64) {
        self.writer
            .add_summary(tensorboard_rs::summary::scalar(tag, value as f32), step);
    }

    /// A grey or RGB image, stored as a PNG of exactly `image.width` x `image.height`.
    pub fn image(&mut self, tag: &str, step: usize, image: &GridImage) {
        let (rgb, dims) = rgb_for_tensorboard_rs(image);
        let mut summary = tensorboard_rs::summary::image(tag, &rgb, &dims);
        // tensorboard-rs records the size transposed; the PNG itself is right.
        for value in summary.mut_value().iter_mut() {
            let img = value.mut_image();
            img.set_width(image.width as i32);
            img.set_height(image.height as i32);
        }
        self.writer.add_summary(summary, step);
    }

    /// Markdown text for TensorBoard's Text tab (the text plugin's scalar string tensor).
    pub fn text(&mut self, tag: &str, step: usize, markdown: &str) {
        self.writer.add_summary(text_summary(tag, markdown), step);
    }

    pub fn flush(&mut self) {
        self.writer.flush();
    }
}

/// What `tensorboard_rs::summary::image` needs to produce an image `width` wide and `height`
/// high: RGB interleaved row by row, and `dims = [3, width, height]`.
fn rgb_for_tensorboard_rs(image: &GridImage) -> (Vec<u8>, [usize; 3]) {
    let rgb = if image.channels == 3 {
        image.pixels.clone()
    } else {
        image.pixels.iter().flat_map(|&p| [p, p, p]).collect()
    };
    (rgb, [3, image.width, image.height])
}

fn text_summary(tag: &str, markdown: &str) -> Summary {
    let mut plugin = SummaryMetadata_PluginData::new();
    plugin.set_plugin_name("text".to_string());
    let mut metadata = SummaryMetadata::new();
    metadata.set_plugin_data(plugin);

    let mut dim = TensorShapeProto_Dim::new();
    dim.set_size(1);
    let mut shape = TensorShapeProto::new();
    shape.set_dim(RepeatedField::from(vec![dim]));
    let mut tensor = TensorProto::new();
    tensor.set_dtype(DataType::DT_STRING);
    tensor.set_tensor_shape(shape);
    tensor.set_string_val(RepeatedField::from(vec![markdown.as_bytes().to_vec()]));

    let mut value = Summary_Value::new();
    value.set_tag(tag.to_string());
    value.set_metadata(metadata);
    value.set_tensor(tensor);
    let mut summary = Summary::new();
    summary.set_value(RepeatedField::from(vec![value]));
    summary
}

/// Reads every event of one event file (for tests and tools): TFRecord framing with both CRCs
/// checked.
pub fn read_events(path: &Path) -> Result<Vec<Event>, MonitorError> {
    use protobuf::Message;
    let bytes = std::fs::read(path).map_err(|source| MonitorError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |message: String| MonitorError::Format {
        path: path.to_path_buf(),
        message,
    };
    let mut events = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let header = bytes
            .get(at..at + 12)
            .ok_or_else(|| bad(format!("truncated record header at byte {at}")))?;
        let len = u64::from_le_bytes(header[..8].try_into().unwrap()) as usize;
        let len_crc = u32::from_le_bytes(header[8..12].try_into().unwrap());
        if masked_crc32c(&header[..8]) != len_crc {
            return Err(bad(format!("length CRC mismatch at byte {at}")));
        }
        let data = bytes
            .get(at + 12..at + 12 + len)
            .ok_or_else(|| bad(format!("truncated record at byte {at}")))?;
        let crc = bytes
            .get(at + 12 + len..at + 16 + len)
            .ok_or_else(|| bad(format!("truncated record CRC at byte {at}")))?;
        if masked_crc32c(data) != u32::from_le_bytes(crc.try_into().unwrap()) {
            return Err(bad(format!("data CRC mismatch at byte {at}")));
        }
        let event = Event::parse_from_bytes(data)
            .map_err(|e| bad(format!("bad Event at byte {at}: {e}")))?;
        events.push(event);
        at += 16 + len;
    }
    Ok(events)
}

fn masked_crc32c(data: &[u8]) -> u32 {
    tensorboard_rs::masked_crc32c::masked_crc32c(data)
}

/// The event files in `dir`, oldest first (their names start with the creation time).
pub fn event_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("events.out.tfevents."))
        })
        .collect();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ember-tb-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// A 5 wide, 3 high image whose pixels all differ, so a transposition shows.
    fn non_square() -> GridImage {
        GridImage {
            width: 5,
            height: 3,
            channels: 1,
            pixels: (0..15).map(|i| i * 10).collect(),
        }
    }

    fn decode_png(bytes: &[u8]) -> (usize, usize, Vec<u8>) {
        let decoder = png::Decoder::new(bytes);
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        buf.truncate(info.buffer_size());
        (info.width as usize, info.height as usize, buf)
    }

    #[test]
    fn tensorboard_rs_image_quirks_are_what_we_work_around() {
        // Fed literally as documented (CHW with dims [3, height, width]) it would draw a
        // 3-wide, 5-high picture: its dims are [3, width, height] and the data is HWC.
        let image = non_square();
        let (rgb, dims) = rgb_for_tensorboard_rs(&image);
        let summary = tensorboard_rs::summary::image("t", &rgb, &dims);
        let recorded = summary.get_value()[0].get_image();
        // The quirk: the recorded size is transposed relative to the PNG.
        assert_eq!(
            (recorded.get_width(), recorded.get_height()),
            (3, 5),
            "tensorboard-rs no longer transposes the recorded size: drop the correction in EventLog::image"
        );
        let (w, h, pixels) = decode_png(recorded.get_encoded_image_string());
        assert_eq!((w, h), (5, 3));
        let grey: Vec<u8> = pixels.chunks(3).map(|p| p[0]).collect();
        assert_eq!(grey, image.pixels, "pixels must keep their row-major order");
    }

    #[test]
    fn events_round_trip_with_correct_sizes_and_text() {
        let dir = temp_dir("roundtrip");
        {
            let mut log = EventLog::create(&dir).unwrap();
            log.scalar("train/loss", 1, 0.5);
            log.scalar("train/loss", 2, 0.25);
            log.image("samples/scale-3", 2, &non_square());
            log.text("config", 0, "seed = 1");
            log.restart_at(2);
        } // drop drains the writer thread
        let files = event_files(&dir);
        assert_eq!(files.len(), 1);
        let events = read_events(&files[0]).unwrap();
        assert_eq!(events[0].get_file_version(), "brain.Event:2");

        let values = |tag: &str| -> Vec<(i64, Summary_Value)> {
            events
                .iter()
                .filter(|e| e.has_summary())
                .flat_map(|e| {
                    e.get_summary()
                        .get_value()
                        .iter()
                        .filter(|v| v.get_tag() == tag)
                        .map(move |v| (e.get_step(), v.clone()))
                })
                .collect()
        };
        let loss: Vec<(i64, f32)> = values("train/loss")
            .into_iter()
            .map(|(s, v)| (s, v.get_simple_value()))
            .collect();
        assert_eq!(loss, vec![(1, 0.5), (2, 0.25)]);

        let images = values("samples/scale-3");
        assert_eq!(images.len(), 1);
        let img = images[0].1.get_image();
        assert_eq!((img.get_width(), img.get_height()), (5, 3));
        let (w, h, _) = decode_png(img.get_encoded_image_string());
        assert_eq!((w, h), (5, 3));

        let text = values("config");
        assert_eq!(
            text[0].1.get_metadata().get_plugin_data().get_plugin_name(),
            "text"
        );
        assert_eq!(text[0].1.get_tensor().get_string_val()[0], b"seed = 1");

        let restart = events.iter().find(|e| e.has_session_log()).unwrap();
        assert_eq!(restart.get_step(), 2);
        assert_eq!(
            restart.get_session_log().get_status(),
            SessionLog_SessionStatus::START
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupt_event_file_is_reported_with_its_offset() {
        let dir = temp_dir("corrupt");
        {
            let mut log = EventLog::create(&dir).unwrap();
            log.scalar("x", 1, 1.0);
        }
        let file = &event_files(&dir)[0];
        let mut bytes = std::fs::read(file).unwrap();
        let last = bytes.len() - 5;
        bytes[last] ^= 0xff;
        std::fs::write(file, &bytes).unwrap();
        let err = read_events(file).unwrap_err().to_string();
        assert!(err.contains("CRC mismatch"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
