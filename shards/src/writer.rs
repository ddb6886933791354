//! `ShardWriter`: appends images to one shard and commits it atomically.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, StringBuilder};
use arrow_array::{ArrayRef, Int32Array, Int64Array, RecordBatch, StructArray};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding};
use parquet::file::metadata::{KeyValue, PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::schema::types::ColumnPath;

use crate::checksum::{crc32c, format_checksum};
use crate::error::{io_err, Error, Result};
use crate::format::{
    huggingface_metadata, index_checksum, index_file_name, rename_durable, shard_file_name, temp_path, write_atomic,
    ShardInfo, StoreKind, FORMAT_VERSION,
};
use crate::index::{encode, Entry};

/// Rows buffered before they are handed to the Parquet writer.
const BATCH_ROWS: usize = 32;
/// Row groups are cut at about this many bytes, bounding the writer's memory.
const ROW_GROUP_BYTES: usize = 64 << 20;
/// Leaf column number of `image.bytes` (after `id`).
const BYTES_LEAF: usize = 1;

/// One image to append: its payload and what the index records about it.
#[derive(Clone, Copy, Debug)]
pub struct NewSample<'a> {
    /// The payload: encoded file bytes, or `height × width × 3` RGB in a raw store.
    pub bytes: &'a [u8],
    /// Source path relative to the ingested folder, `/`-separated.
    pub path: &'a str,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// Writes one shard: `shard-NNNNN.parquet` plus its `.idx`, both under temporary names
/// until [`ShardWriter::finish`] renames them.
pub struct ShardWriter {
    dir: PathBuf,
    number: usize,
    first_id: u64,
    store: StoreKind,
    tmp: PathBuf,
    writer: ArrowWriter<BufWriter<File>>,
    batch: BatchBuilder,
    lens: Vec<u32>,
    crcs: Vec<u32>,
    dims: Vec<(u32, u32)>,
    paths: String,
    path_ranges: Vec<(u32, u32)>,
    image_bytes: u64,
}

impl ShardWriter {
    /// Starts shard `number` in `dir`; its first row gets id `first_id`.
    pub fn create(dir: &Path, number: usize, first_id: u64, store: StoreKind) -> Result<Self> {
        let tmp = temp_path(&dir.join(shard_file_name(number)));
        let file = File::create(&tmp).map_err(io_err(&tmp))?;
        let writer = ArrowWriter::try_new(
            BufWriter::with_capacity(1 << 20, file),
            schema_for(store),
            Some(properties(store)),
        )
        .map_err(|source| Error::Parquet {
            path: tmp.clone(),
            source,
        })?;
        Ok(ShardWriter {
            dir: dir.to_path_buf(),
            number,
            first_id,
            store,
            tmp,
            writer,
            batch: BatchBuilder::default(),
            lens: Vec::new(),
            crcs: Vec::new(),
            dims: Vec::new(),
            paths: String::new(),
            path_ranges: Vec::new(),
            image_bytes: 0,
        })
    }

    /// Rows appended so far.
    pub fn rows(&self) -> u64 {
        self.lens.len() as u64
    }

    /// Payload bytes appended so far (what `--shard-size` is compared with).
    pub fn image_bytes(&self) -> u64 {
        self.image_bytes
    }

    /// Appends one image; it gets id `first_id + rows()`.
    pub fn push(&mut self, s: NewSample<'_>) -> Result<()> {
        self.check(&s)?;
        let id = self.first_id + self.rows();
        self.batch.push(id, &s);
        self.lens.push(s.bytes.len() as u32);
        self.crcs.push(crc32c(s.bytes));
        self.dims.push((s.width, s.height));
        self.path_ranges.push((self.paths.len() as u32, s.path.len() as u32));
        self.paths.push_str(s.path);
        self.image_bytes += s.bytes.len() as u64;
        if self.batch.rows() >= BATCH_ROWS {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn check(&self, s: &NewSample<'_>) -> Result<()> {
        let invalid = |reason: String| {
            Err(Error::Invalid {
                path: PathBuf::from(s.path),
                reason,
            })
        };
        if s.bytes.is_empty() || s.bytes.len() > u32::MAX as usize {
            return invalid(format!("payload of {} bytes cannot be stored", s.bytes.len()));
        }
        let raw_len = s.width as u64 * s.height as u64 * 3;
        if self.store == StoreKind::Raw && raw_len != s.bytes.len() as u64 {
            return invalid(format!(
                "raw payload is {} bytes, {}x{}x3 is {raw_len}",
                s.bytes.len(),
                s.width,
                s.height
            ));
        }
        Ok(())
    }

    fn flush_batch(&mut self) -> Result<()> {
        if self.batch.rows() == 0 {
            return Ok(());
        }
        let batch = self.batch.finish().map_err(|source| Error::Arrow {
            path: self.tmp.clone(),
            source,
        })?;
        self.writer.write(&batch).map_err(|source| Error::Parquet {
            path: self.tmp.clone(),
            source,
        })
    }

    /// Closes the Parquet file, locates every payload in it, writes the index, and renames
    /// both files into place. Returns the shard's manifest line.
    pub fn finish(mut self) -> Result<ShardInfo> {
        self.flush_batch()?;
        self.writer.finish().map_err(|source| Error::Parquet {
            path: self.tmp.clone(),
            source,
        })?;
        std::io::Write::flush(self.writer.inner_mut()).map_err(io_err(&self.tmp))?;
        self.writer.inner().get_ref().sync_all().map_err(io_err(&self.tmp))?;
        let map = crate::reader::map_file(&self.tmp)?;
        let bytes: &[u8] = &map;
        let entries = self.locate(bytes)?;
        let index = encode(self.first_id, &entries, &self.paths);
        let index_path = self.dir.join(index_file_name(self.number));
        let data_path = self.dir.join(shard_file_name(self.number));
        rename_durable(&self.tmp, &data_path)?;
        write_atomic(&index_path, &index)?;
        Ok(ShardInfo {
            file: shard_file_name(self.number),
            index: index_file_name(self.number),
            first_id: self.first_id,
            rows: self.rows(),
            bytes: bytes.len() as u64,
            checksum: format_checksum(crc32c(bytes)),
            index_bytes: index.len() as u64,
            index_checksum: index_checksum(FORMAT_VERSION, &index),
            image_bytes: self.image_bytes,
        })
    }

    /// Finds each payload in the written file from Parquet's offset index: with one value
    /// per PLAIN, uncompressed v1 data page, the value is the page's last `len` bytes,
    /// preceded by its 4-byte length. Both facts and the CRC are checked.
    fn locate(&self, file: &[u8]) -> Result<Vec<Entry>> {
        let meta = read_metadata(&self.tmp)?;
        let pages = payload_pages(&meta);
        let corrupt = |reason: String| Error::Corrupt {
            path: self.tmp.clone(),
            reason,
        };
        if pages.len() != self.lens.len() {
            return Err(corrupt(format!(
                "{} data pages for {} rows",
                pages.len(),
                self.lens.len()
            )));
        }
        let mut entries = Vec::with_capacity(pages.len());
        for (row, &(start, size)) in pages.iter().enumerate() {
            let len = self.lens[row] as u64;
            let offset = (start + size).checked_sub(len).filter(|&o| o >= start + 4);
            let offset = offset.ok_or_else(|| corrupt(format!("row {row}: page smaller than its value")))?;
            let prefix = u32::from_le_bytes(file[offset as usize - 4..offset as usize].try_into().unwrap());
            let payload = &file[offset as usize..(offset + len) as usize];
            if prefix as u64 != len || crc32c(payload) != self.crcs[row] {
                return Err(corrupt(format!("row {row}: payload not found at the end of its page")));
            }
            let (width, height) = self.dims[row];
            let (path_offset, path_len) = self.path_ranges[row];
            entries.push(Entry {
                offset,
                len: len as u32,
                crc: self.crcs[row],
                width,
                height,
                path_offset,
                path_len,
            });
        }
        Ok(entries)
    }
}

/// Parses a Parquet footer with its page index.
pub(crate) fn read_metadata(path: &Path) -> Result<ParquetMetaData> {
    let file = File::open(path).map_err(io_err(path))?;
    ParquetMetaDataReader::new()
        .with_page_index_policy(PageIndexPolicy::Required)
        .parse_and_finish(&file)
        .map_err(|source| Error::Parquet {
            path: path.to_path_buf(),
            source,
        })
}

/// `(offset, size)` of every `image.bytes` data page, in row order.
pub(crate) fn payload_pages(meta: &ParquetMetaData) -> Vec<(u64, u64)> {
    let mut pages = Vec::new();
    for group in 0..meta.num_row_groups() {
        let index = meta.page_index_for_row_group(group);
        let Some(locations) = index.page_locations(BYTES_LEAF) else {
            return Vec::new();
        };
        pages.extend(
            locations
                .iter()
                .map(|p| (p.offset as u64, p.compressed_page_size as u64)),
        );
    }
    pages
}

/// The Arrow schema of a shard of `store`, with the `huggingface` metadata.
pub fn schema_for(store: StoreKind) -> SchemaRef {
    let hf = [("huggingface".to_string(), huggingface_metadata(store))];
    let metadata: std::collections::HashMap<String, String> = hf.into_iter().collect();
    Arc::new(Schema::clone(&schema()).with_metadata(metadata))
}

/// The Arrow schema of every shard's columns.
pub fn schema() -> SchemaRef {
    let image = Fields::from(vec![
        Field::new("bytes", DataType::Binary, true),
        Field::new("path", DataType::Utf8, true),
    ]);
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("image", DataType::Struct(image), true),
        Field::new("width", DataType::Int32, false),
        Field::new("height", DataType::Int32, false),
    ]))
}

fn properties(store: StoreKind) -> WriterProperties {
    let hf = KeyValue::new("huggingface".to_string(), huggingface_metadata(store));
    let no_stats = |b: parquet::file::properties::WriterPropertiesBuilder, leaf: &str| {
        let col = ColumnPath::new(vec!["image".to_string(), leaf.to_string()]);
        b.set_column_statistics_enabled(col, EnabledStatistics::None)
    };
    let b = WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_1_0)
        .set_compression(Compression::UNCOMPRESSED)
        .set_dictionary_enabled(false)
        .set_encoding(Encoding::PLAIN)
        .set_data_page_row_count_limit(1)
        .set_write_batch_size(1)
        .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
        .set_created_by(format!("slotcon-shards {}", env!("CARGO_PKG_VERSION")))
        .set_key_value_metadata(Some(vec![hf]));
    no_stats(no_stats(b, "bytes"), "path").build()
}

/// Column builders for the next record batch.
#[derive(Default)]
struct BatchBuilder {
    ids: Vec<i64>,
    bytes: BinaryBuilder,
    paths: StringBuilder,
    widths: Vec<i32>,
    heights: Vec<i32>,
}

impl BatchBuilder {
    fn rows(&self) -> usize {
        self.ids.len()
    }

    fn push(&mut self, id: u64, s: &NewSample<'_>) {
        self.ids.push(id as i64);
        self.bytes.append_value(s.bytes);
        self.paths.append_value(s.path);
        self.widths.push(s.width as i32);
        self.heights.push(s.height as i32);
    }

    fn finish(&mut self) -> std::result::Result<RecordBatch, arrow_schema::ArrowError> {
        let schema = schema();
        let DataType::Struct(image_fields) = schema.field(1).data_type().clone() else {
            unreachable!()
        };
        let image = StructArray::try_new(
            image_fields,
            vec![Arc::new(self.bytes.finish()) as ArrayRef, Arc::new(self.paths.finish())],
            None,
        )?;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(std::mem::take(&mut self.ids))),
            Arc::new(image),
            Arc::new(Int32Array::from(std::mem::take(&mut self.widths))),
            Arc::new(Int32Array::from(std::mem::take(&mut self.heights))),
        ];
        RecordBatch::try_new(schema, columns)
    }
}
