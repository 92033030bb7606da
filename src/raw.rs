//! Raw case records in: CSV (UTF-8, BOM and CRLF allowed, `,` `;` or tab
//! separated) and XLSX (first sheet). Produces rows of text cells with the
//! spreadsheet row number a person sees in Excel (the header is row 1).
//!
//! Cells may hold identity values: this module never prints a cell. Its
//! errors name the file and the row.

use std::io::Read;
use std::path::Path;

use calamine::{Data, Reader};

use crate::error::{Error, Result};

/// One data row of a raw file.
#[derive(Debug, Clone)]
pub struct RawRow {
    /// Spreadsheet row number (the header is row 1).
    pub line: u64,
    /// The cells, one per header column (missing trailing cells are blank).
    pub cells: csv::StringRecord,
    /// Set when the row cannot be read as text; the row is then rejected.
    pub defect: Option<String>,
}

/// A raw file: its header and rows.
#[derive(Debug, Clone)]
pub struct RawTable {
    /// Header cells as written (trimmed, BOM removed).
    pub header: Vec<String>,
    /// Data rows, blank rows left out.
    pub rows: Vec<RawRow>,
}

/// The kinds of raw file we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawFormat {
    /// Comma-, semicolon- or tab-separated text.
    Csv,
    /// Excel workbook (first sheet).
    Xlsx,
}

impl RawFormat {
    /// The format of a path, by its extension.
    pub fn of(path: &Path) -> Result<Self> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("csv") | Some("txt") | Some("tsv") => Ok(RawFormat::Csv),
            Some("xlsx") | Some("xlsm") => Ok(RawFormat::Xlsx),
            Some("xls") => Err(Error::Usage(format!(
                "{}: old Excel .xls files are not read. In Excel, use File > Save As > \
                 Excel Workbook (.xlsx) or CSV UTF-8",
                path.display()
            ))),
            _ => Err(Error::Usage(format!(
                "{}: not a .csv or .xlsx file",
                path.display()
            ))),
        }
    }
}

/// A raw file opened for pseudonymising. A CSV body without `"` (so no
/// cell can hold a line break or a separator) stays as bytes, split into
/// spans at line breaks, each parsed by the worker that codes it: the rows
/// are never all held at once. Other bodies are read into rows.
#[derive(Debug)]
pub struct RawFile {
    /// Header cells as written (trimmed, BOM removed).
    pub header: Vec<String>,
    /// The data rows.
    pub body: Body,
}

/// The data rows of a [`RawFile`].
#[derive(Debug)]
pub enum Body {
    /// Rows already read (XLSX, or CSV with quotes).
    Rows(Vec<RawRow>),
    /// A CSV body with no `"`, still as bytes.
    Text(TextBody),
}

/// A quote-free CSV body, planned into spans that end at line breaks. Its
/// bytes stay in the file (or in memory, for bytes given as such): the
/// worker that codes a span reads it into a buffer it keeps, so the file is
/// never held whole.
#[derive(Debug)]
pub struct TextBody {
    source: TextSource,
    spans: Vec<Span>,
    delimiter: u8,
    /// The file, for messages.
    path: std::path::PathBuf,
}

/// Where a [`TextBody`]'s bytes are.
#[derive(Debug)]
enum TextSource {
    /// Bytes given in memory (BOM removed).
    Memory(Vec<u8>),
    /// The file, read a span at a time (positions are the file's own),
    /// and its length when opened: bytes added later are not read.
    File(std::sync::Mutex<std::fs::File>, usize),
}

impl TextSource {
    /// Reads up to `len` bytes at `pos` into `buf` (replacing its
    /// contents): fewer only at the end of the file.
    fn read(&self, pos: usize, len: usize, buf: &mut Vec<u8>) -> std::io::Result<()> {
        match self {
            TextSource::Memory(bytes) => {
                let from = pos.min(bytes.len());
                buf.clear();
                buf.extend_from_slice(&bytes[from..pos.saturating_add(len).min(bytes.len())]);
            }
            TextSource::File(file, size) => {
                use std::io::{Seek, SeekFrom};
                let len = len.min(size.saturating_sub(pos));
                let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
                file.seek(SeekFrom::Start(pos as u64))?;
                // The buffer is kept from span to span: only bytes past its
                // last length are zeroed.
                buf.resize(len, 0);
                let mut filled = 0;
                while filled < len {
                    match file.read(&mut buf[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                buf.truncate(filled);
            }
        }
        Ok(())
    }
}

/// Spans of about `step` bytes from `start`, each ending at a line break
/// (or the end), read a piece at a time into one buffer; `before` line
/// breaks come before `start`. `None` when the body holds a `"`.
fn plan_spans(
    source: &TextSource,
    start: usize,
    mut before: u64,
    step: usize,
) -> std::io::Result<Option<Vec<Span>>> {
    let step = step.max(1);
    let mut spans = Vec::new();
    let mut buf = Vec::new();
    let mut pos = start;
    loop {
        // A piece of `want` bytes, doubled until it holds a line break.
        let mut want = step;
        let end = loop {
            source.read(pos, want, &mut buf)?;
            if buf.len() < want {
                break buf.len();
            }
            if let Some(i) = buf.iter().rposition(|b| *b == b'\n') {
                break i + 1;
            }
            want = want.saturating_mul(2);
        };
        if end == 0 {
            return Ok(Some(spans));
        }
        let (newlines, quoted) = scan(&buf[..end]);
        if quoted {
            return Ok(None);
        }
        spans.push(Span {
            start: pos,
            end: pos + end,
            before,
        });
        before += newlines;
        pos += end;
    }
}

/// The line breaks in `bytes`, and whether it holds a `"`: one pass, in
/// blocks the compiler can vectorise.
fn scan(bytes: &[u8]) -> (u64, bool) {
    let (mut newlines, mut quotes) = (0u64, 0u8);
    for block in bytes.chunks(128) {
        let (mut n, mut q) = (0u8, 0u8);
        for b in block {
            n += (*b == b'\n') as u8;
            q |= (*b == b'"') as u8;
        }
        newlines += n as u64;
        quotes |= q;
    }
    (newlines, quotes != 0)
}

/// A piece of a [`TextBody`] that ends at a line break (or the end).
#[derive(Debug, Clone, Copy)]
pub struct Span {
    start: usize,
    end: usize,
    /// Line breaks before `start`.
    before: u64,
}

impl Span {
    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

impl TextBody {
    /// The body's spans, in order: each ends at a line break (or the end)
    /// and knows the number of lines before it.
    pub fn spans(&self) -> &[Span] {
        &self.spans
    }

    /// Calls `f` with each non-blank row of a span, in order, as the csv
    /// crate would read it: a record ends at `\r`, `\n` or `\r\n`, empty
    /// lines are skipped, and (no quotes) every separator splits cells.
    /// Missing trailing cells are blank; extra cells are cut after the
    /// row is checked for them, as [`read`] does. The span is read into
    /// `buf`, which the caller keeps from span to span.
    pub fn for_each_row(
        &self,
        span: Span,
        width: usize,
        buf: &mut Vec<u8>,
        mut f: impl FnMut(TextRow<'_>),
    ) -> Result<()> {
        let cannot_read = |e| Error::io(format!("cannot read {}", self.path.display()), e);
        self.source
            .read(span.start, span.len(), buf)
            .map_err(cannot_read)?;
        if buf.len() != span.len() {
            return Err(cannot_read(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file changed while it was read",
            )));
        }
        let bytes = &buf[..];
        // Usually the whole span is valid UTF-8: checked once, each row is
        // then a slice of it (rows end at ASCII bytes, so at characters).
        let valid = std::str::from_utf8(bytes).ok();
        let delimiter = self.delimiter;
        let mut pos = 0;
        let mut newlines = span.before;
        let mut cells: Vec<(u32, u32)> = Vec::with_capacity(width + 1);
        while pos < bytes.len() {
            match bytes[pos] {
                b'\n' => {
                    newlines += 1;
                    pos += 1;
                    continue;
                }
                b'\r' => {
                    pos += 1;
                    continue;
                }
                _ => {}
            }
            let start = pos;
            cells.clear();
            let mut cell_start = pos;
            loop {
                pos = find_break(bytes, pos, delimiter);
                if pos < bytes.len() && bytes[pos] == delimiter {
                    cells.push(((cell_start - start) as u32, (pos - start) as u32));
                    pos += 1;
                    cell_start = pos;
                } else {
                    break;
                }
            }
            cells.push(((cell_start - start) as u32, (pos - start) as u32));
            let line = newlines + 1;
            let record = &bytes[start..pos];
            let text = match valid {
                Some(valid) => Ok(&valid[start..pos]),
                None => std::str::from_utf8(record),
            };
            let offset = (span.start + start) as u64;
            let Ok(text) = text else {
                f(TextRow {
                    line,
                    offset,
                    text: "",
                    cells: &[],
                    defect: Some(not_utf8()),
                });
                continue;
            };
            let cell = |c: &(u32, u32)| &text[c.0 as usize..c.1 as usize];
            if cells.iter().all(|c| trim(cell(c)).is_empty()) {
                continue;
            }
            let cells_in_row = cells.len();
            let defect = (cells_in_row > width
                && cells[width..].iter().any(|c| !trim(cell(c)).is_empty()))
            .then(|| extra_cells(cells_in_row, width));
            f(TextRow {
                line,
                offset,
                text,
                cells: &cells[..cells_in_row.min(width)],
                defect,
            });
        }
        Ok(())
    }
}

/// The first position from `pos` holding the delimiter, `\n` or `\r`, or
/// the end: eight bytes at a time.
#[inline]
fn find_break(bytes: &[u8], mut pos: usize, delimiter: u8) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // The high bit of each zero byte of `x`, and maybe of bytes above the
    // first zero byte: the lowest bit set is always the first zero byte.
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let (d, n, r) = (
        ONES * delimiter as u64,
        ONES * b'\n' as u64,
        ONES * b'\r' as u64,
    );
    while let Some(word) = bytes.get(pos..pos + 8) {
        let w = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        let found = zero(w ^ d) | zero(w ^ n) | zero(w ^ r);
        if found != 0 {
            return pos + (found.trailing_zeros() / 8) as usize;
        }
        pos += 8;
    }
    while pos < bytes.len() && !matches!(bytes[pos], b'\n' | b'\r') && bytes[pos] != delimiter {
        pos += 1;
    }
    pos
}

/// One row of a [`TextBody`].
pub struct TextRow<'a> {
    /// Spreadsheet row number.
    pub line: u64,
    /// Byte offset of the row in its file: tells rows apart.
    pub offset: u64,
    text: &'a str,
    cells: &'a [(u32, u32)],
    /// Set when the row cannot be read as text or has extra cells.
    pub defect: Option<String>,
}

impl<'a> TextRow<'a> {
    /// Cell `i`, blank when the row is shorter (or could not be read).
    #[inline]
    pub fn cell(&self, i: usize) -> &'a str {
        self.cells
            .get(i)
            .map_or("", |c| &self.text[c.0 as usize..c.1 as usize])
    }
}

/// `str::trim`, faster for the ASCII white space around most cells.
#[inline]
pub fn trim(s: &str) -> &str {
    let b = s.as_bytes();
    let ws = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r');
    let mut a = 0;
    while a < b.len() && ws(b[a]) {
        a += 1;
    }
    let mut z = b.len();
    while z > a && ws(b[z - 1]) {
        z -= 1;
    }
    let s = &s[a..z];
    // Other white space is not ASCII.
    if s.as_bytes().first().is_some_and(|c| *c >= 0x80)
        || s.as_bytes().last().is_some_and(|c| *c >= 0x80)
    {
        s.trim()
    } else {
        s
    }
}

fn not_utf8() -> String {
    "the row is not UTF-8 text; in Excel use File > Save As > CSV UTF-8 (Comma delimited)"
        .to_string()
}

fn extra_cells(cells_in_row: usize, width: usize) -> String {
    format!(
        "the row has {cells_in_row} cells but the header has {width}; check for an unquoted \
         separator"
    )
}

/// Bytes of a quote-free CSV body per span (about 16,000 screening rows):
/// enough to keep the cores busy, small enough to keep memory flat.
pub const SPAN_BYTES: usize = 2 << 20;

/// Opens a raw file of either format for pseudonymising. A CSV file is
/// read a piece at a time to find its header and plan its spans; only a
/// body with quotes (or a header longer than a span) is read whole.
pub fn open(path: &Path) -> Result<RawFile> {
    match RawFormat::of(path)? {
        RawFormat::Csv => match open_csv_file(path, SPAN_BYTES)? {
            Some(file) => Ok(file),
            None => {
                let bytes = std::fs::read(path)
                    .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
                open_csv_bytes(bytes, path)
            }
        },
        RawFormat::Xlsx => {
            let t = read_xlsx(path)?;
            Ok(RawFile {
                header: t.header,
                body: Body::Rows(t.rows),
            })
        }
    }
}

/// A quote-free CSV file as a [`TextBody`] in spans of about `step` bytes;
/// `None` when it must be read whole: its body holds a `"`, or its header
/// does not end within the first [`SPAN_BYTES`].
fn open_csv_file(path: &Path, step: usize) -> Result<Option<RawFile>> {
    let cannot_read = |e| Error::io(format!("cannot read {}", path.display()), e);
    let file = std::fs::File::open(path).map_err(cannot_read)?;
    let size = file.metadata().map_err(cannot_read)?.len() as usize;
    let source = TextSource::File(std::sync::Mutex::new(file), size);
    let mut head = Vec::new();
    source.read(0, SPAN_BYTES, &mut head).map_err(cannot_read)?;
    let whole = head.len() < SPAN_BYTES;
    let bom = if head.starts_with(b"\xEF\xBB\xBF") {
        3
    } else {
        0
    };
    let h = &head[bom..];
    // The header and separator read from the first piece are those of the
    // whole file when the first line, and the header record, end in it.
    if !whole && !h.contains(&b'\n') {
        return Ok(None);
    }
    let (header, body) = match read_header(h, path) {
        Ok((header, body)) if whole || body < h.len() => (header, body),
        Ok(_) => return Ok(None),
        Err(e) if whole => return Err(e),
        Err(_) => return Ok(None),
    };
    let delimiter = sniff_delimiter(h);
    let before = scan(&h[..body]).0;
    let Some(spans) = plan_spans(&source, bom + body, before, step).map_err(cannot_read)? else {
        return Ok(None);
    };
    Ok(Some(RawFile {
        header,
        body: Body::Text(TextBody {
            source,
            spans,
            delimiter,
            path: path.to_path_buf(),
        }),
    }))
}

/// As [`read_csv_bytes`], keeping a quote-free body as bytes.
pub fn open_csv_bytes(bytes: Vec<u8>, path: &Path) -> Result<RawFile> {
    open_csv_bytes_in(bytes, path, SPAN_BYTES)
}

/// [`open_csv_bytes`] with spans of about `step` bytes.
fn open_csv_bytes_in(mut bytes: Vec<u8>, path: &Path, step: usize) -> Result<RawFile> {
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        bytes.drain(..3);
    }
    let (header, body) = read_header(&bytes, path)?;
    let delimiter = sniff_delimiter(&bytes);
    let before = scan(&bytes[..body]).0;
    if bytes[body..].contains(&b'"') {
        let rows = parse_body(&bytes, body, delimiter, header.len(), path, PARALLEL_FROM)?;
        return Ok(RawFile {
            header,
            body: Body::Rows(rows),
        });
    }
    let source = TextSource::Memory(bytes);
    let spans = plan_spans(&source, body, before, step)
        .expect("memory reads do not fail")
        .expect("no quote in the body");
    Ok(RawFile {
        header,
        body: Body::Text(TextBody {
            source,
            spans,
            delimiter,
            path: path.to_path_buf(),
        }),
    })
}

/// Reads a raw file of either format.
pub fn read(path: &Path) -> Result<RawTable> {
    match RawFormat::of(path)? {
        RawFormat::Csv => {
            let mut bytes = Vec::new();
            std::fs::File::open(path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
            read_csv_bytes(&bytes, path)
        }
        RawFormat::Xlsx => read_xlsx(path),
    }
}

/// Picks the separator from the header line: the most frequent of `,` `;` tab.
fn sniff_delimiter(bytes: &[u8]) -> u8 {
    let first_line = bytes.split(|b| *b == b'\n').next().unwrap_or(&[]);
    [b',', b';', b'\t']
        .into_iter()
        .max_by_key(|d| (first_line.iter().filter(|b| *b == d).count(), *d == b','))
        .unwrap_or(b',')
}

/// Reads CSV bytes. `path` is used in messages only.
pub fn read_csv_bytes(bytes: &[u8], path: &Path) -> Result<RawTable> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let (header, body) = read_header(bytes, path)?;
    let delimiter = sniff_delimiter(bytes);
    let rows = parse_body(bytes, body, delimiter, header.len(), path, PARALLEL_FROM)?;
    Ok(RawTable { header, rows })
}

/// The header cells and where the body starts (BOM already removed).
fn read_header(bytes: &[u8], path: &Path) -> Result<(Vec<String>, usize)> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(sniff_delimiter(bytes))
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut records = reader.byte_records();
    let header = match records.next() {
        None => {
            return Err(Error::Refused(format!(
                "{}: the file is empty; it needs a header row (see 'safetally template')",
                path.display()
            )));
        }
        Some(r) => r.map_err(|e| csv_error(path, e))?,
    };
    let header: Vec<String> = header
        .iter()
        .enumerate()
        .map(|(i, h)| {
            std::str::from_utf8(h)
                .map(|s| s.trim().to_string())
                .map_err(|_| {
                    Error::Refused(format!(
                        "{}: header cell {} is not UTF-8 text. In Excel, use File > Save As > \
                         CSV UTF-8 (Comma delimited)",
                        path.display(),
                        i + 1
                    ))
                })
        })
        .collect::<Result<_>>()?;
    let body = records.reader().position().byte() as usize;
    Ok((header, body))
}

/// Bodies larger than this are parsed in parallel when they hold no quote.
const PARALLEL_FROM: usize = 4 << 20;

/// Parses the rows after the header. A body with no `"` cannot have a line
/// break inside a cell, so it is split at line breaks and the pieces are
/// parsed in parallel; otherwise it is parsed in one pass. Both give the
/// same rows.
fn parse_body(
    bytes: &[u8],
    body: usize,
    delimiter: u8,
    width: usize,
    path: &Path,
    parallel_from: usize,
) -> Result<Vec<RawRow>> {
    use rayon::prelude::*;
    let before = bytes[..body].iter().filter(|b| **b == b'\n').count() as u64;
    if bytes.len() - body < parallel_from || bytes[body..].contains(&b'"') {
        return parse_rows(bytes, body, bytes.len(), before, delimiter, width, path);
    }
    let pieces = rayon::current_num_threads() * 4;
    let step = (bytes.len() - body).div_ceil(pieces).max(1);
    let mut bounds = vec![body];
    while *bounds.last().expect("one") < bytes.len() {
        let from = (*bounds.last().expect("one") + step).min(bytes.len());
        let end = bytes[from..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(bytes.len(), |i| from + i + 1);
        bounds.push(end);
    }
    let spans: Vec<(usize, usize)> = bounds.windows(2).map(|w| (w[0], w[1])).collect();
    let newlines: Vec<u64> = spans
        .par_iter()
        .map(|(a, b)| bytes[*a..*b].iter().filter(|c| **c == b'\n').count() as u64)
        .collect();
    let mut starts = Vec::with_capacity(spans.len());
    let mut seen = before;
    for n in &newlines {
        starts.push(seen);
        seen += n;
    }
    let parts: Vec<Vec<RawRow>> = spans
        .par_iter()
        .zip(starts)
        .map(|((a, b), before)| parse_rows(bytes, *a, *b, before, delimiter, width, path))
        .collect::<Result<_>>()?;
    Ok(parts.into_iter().flatten().collect())
}

/// Parses `bytes[start..end]`, whose first line is line `before + 1`.
fn parse_rows(
    bytes: &[u8],
    start: usize,
    end: usize,
    before: u64,
    delimiter: u8,
    width: usize,
    path: &Path,
) -> Result<Vec<RawRow>> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .from_reader(&bytes[start..end]);
    let mut lines = LineCounter {
        offset: start,
        newlines: before,
    };
    let mut rows = Vec::new();
    for record in reader.byte_records() {
        let record = record.map_err(|e| csv_error(path, e))?;
        let at = start + record.position().map_or(0, |p| p.byte() as usize);
        let line = lines.line_at(bytes, at);
        let cells_in_row = record.len();
        let (mut cells, mut defect) = match csv::StringRecord::from_byte_record(record) {
            Ok(r) => (r, None),
            Err(_) => (csv::StringRecord::new(), Some(not_utf8())),
        };
        if defect.is_none() && cells.iter().all(|c| c.trim().is_empty()) {
            continue;
        }
        if cells_in_row > width && cells.iter().skip(width).any(|c| !c.trim().is_empty()) {
            defect = Some(extra_cells(cells_in_row, width));
        }
        fit(&mut cells, width);
        rows.push(RawRow {
            line,
            cells,
            defect,
        });
    }
    Ok(rows)
}

/// Spreadsheet row numbers from byte offsets. csv reports a record's start
/// at the line break before it when lines end in CRLF, so the count skips
/// leading line breaks itself. Offsets must not decrease.
#[derive(Default)]
struct LineCounter {
    offset: usize,
    newlines: u64,
}

impl LineCounter {
    fn line_at(&mut self, bytes: &[u8], mut start: usize) -> u64 {
        while start < bytes.len() && matches!(bytes[start], b'\r' | b'\n') {
            start += 1;
        }
        let start = start.max(self.offset).min(bytes.len());
        self.newlines += bytes[self.offset..start]
            .iter()
            .filter(|b| **b == b'\n')
            .count() as u64;
        self.offset = start;
        self.newlines + 1
    }
}

/// Pads a record with blank cells, or cuts it, to `width` cells.
fn fit(record: &mut csv::StringRecord, width: usize) {
    if record.len() > width {
        record.truncate(width);
    }
    while record.len() < width {
        record.push_field("");
    }
}

fn csv_error(path: &Path, e: csv::Error) -> Error {
    let at = e
        .position()
        .map(|p| format!(" at row {}", p.line()))
        .unwrap_or_default();
    // csv's messages describe structure, not field contents.
    Error::Refused(format!(
        "{}{at}: not a readable CSV file ({})",
        path.display(),
        match e.kind() {
            csv::ErrorKind::Io(io) => io.to_string(),
            _ => "malformed quoting or separators".to_string(),
        }
    ))
}

/// Reads the first sheet of an XLSX workbook. Dates typed as Excel dates
/// become `YYYY-MM-DD`; whole numbers lose their `.0`.
pub fn read_xlsx(path: &Path) -> Result<RawTable> {
    let book: calamine::Xlsx<_> = calamine::open_workbook(path).map_err(|e| {
        Error::Refused(format!(
            "{}: not a readable Excel workbook ({e}). Save it again from Excel as .xlsx",
            path.display()
        ))
    })?;
    xlsx_table(book, path)
}

/// As [`read_xlsx`], for a workbook's bytes (`path` names it in messages).
pub fn read_xlsx_bytes(bytes: &[u8], path: &Path) -> Result<RawTable> {
    let book = calamine::Xlsx::new(std::io::Cursor::new(bytes)).map_err(|e| {
        Error::Refused(format!(
            "{}: not a readable Excel workbook ({e}). Save it again from Excel as .xlsx",
            path.display()
        ))
    })?;
    xlsx_table(book, path)
}

/// The first sheet of an opened workbook as a table.
fn xlsx_table<R: std::io::Read + std::io::Seek>(
    mut book: calamine::Xlsx<R>,
    path: &Path,
) -> Result<RawTable> {
    let range = book
        .worksheet_range_at(0)
        .ok_or_else(|| Error::Refused(format!("{}: the workbook has no sheet", path.display())))?
        .map_err(|e| {
            Error::Refused(format!(
                "{}: the first sheet cannot be read ({e})",
                path.display()
            ))
        })?;
    let first_row = range.start().map_or(0, |(r, _)| r) as u64;
    let first_col = range.start().map_or(0, |(_, c)| c) as usize;
    let mut rows_iter = range.rows();
    let Some(header_row) = rows_iter.next() else {
        return Err(Error::Refused(format!(
            "{}: the first sheet is empty; it needs a header row (see 'safetally template')",
            path.display()
        )));
    };
    // Cells left of the used range are blank.
    let pad = |cells: &[Data]| -> Vec<Data> {
        let mut v = vec![Data::Empty; first_col];
        v.extend_from_slice(cells);
        v
    };
    let header: Vec<String> = pad(header_row)
        .iter()
        .map(|c| cell_text(c).trim().to_string())
        .collect();
    let width = header.len();
    let mut rows = Vec::new();
    for (i, row) in rows_iter.enumerate() {
        let cells: Vec<String> = pad(row).iter().map(cell_text).collect();
        if cells.iter().all(|c| c.trim().is_empty()) {
            continue;
        }
        let mut defect = None;
        if pad(row).iter().any(|c| matches!(c, Data::Error(_))) {
            defect = Some("the row has a cell showing an Excel error (#REF!, #VALUE!...)".into());
        }
        let mut cells = csv::StringRecord::from(cells);
        fit(&mut cells, width);
        rows.push(RawRow {
            line: first_row + i as u64 + 2,
            cells,
            defect,
        });
    }
    Ok(RawTable { header, rows })
}

fn cell_text(cell: &Data) -> String {
    match cell {
        Data::Empty | Data::Error(_) => String::new(),
        Data::String(s) => s.clone(),
        Data::Int(i) => i.to_string(),
        Data::Float(f) => {
            if f.fract() == 0.0 && f.abs() < 1e15 {
                format!("{}", *f as i64)
            } else {
                f.to_string()
            }
        }
        Data::Bool(b) => if *b { "yes" } else { "no" }.to_string(),
        Data::DateTime(dt) => dt
            .as_datetime()
            .map(|d| d.date().format("%Y-%m-%d").to_string())
            .unwrap_or_default(),
        Data::DateTimeIso(s) => s.split('T').next().unwrap_or_default().to_string(),
        Data::DurationIso(s) => s.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_with_bom_crlf_and_semicolons() {
        let t = read_csv_bytes(
            b"\xEF\xBB\xBFcase_ref;sex\r\nA1;f\r\n\r\n;\r\nA2;m\r\n",
            Path::new("x.csv"),
        )
        .unwrap();
        assert_eq!(t.header, ["case_ref", "sex"]);
        assert_eq!(t.rows.len(), 2);
        assert_eq!(t.rows[0].cells, vec!["A1", "f"]);
        assert_eq!(t.rows[0].line, 2);
        assert_eq!(t.rows[1].line, 5);
    }

    #[test]
    fn parallel_parsing_gives_the_same_rows_and_row_numbers() {
        let mut text = String::from("a;b;c\r\n");
        for i in 0..5000 {
            match i % 7 {
                0 => text.push_str("\r\n"),
                1 => text.push_str(&format!("x{i};y;z;extra\r\n")),
                _ => text.push_str(&format!("x{i};é{i};\r\n")),
            }
        }
        let bytes = text.as_bytes();
        let p = Path::new("x.csv");
        let body = text.find('\n').unwrap() - 1;
        let one = parse_body(bytes, body, b';', 3, p, usize::MAX).unwrap();
        let many = parse_body(bytes, body, b';', 3, p, 0).unwrap();
        assert_eq!(one.len(), many.len());
        assert!(one.len() > 4000);
        for (a, b) in one.iter().zip(&many) {
            assert_eq!((a.line, &a.cells, &a.defect), (b.line, &b.cells, &b.defect));
        }
        let t = read_csv_bytes(bytes, p).unwrap();
        assert_eq!(t.rows.len(), one.len());
        assert_eq!(t.rows[0].line, 3, "row 2 is blank");
    }

    /// A row as a test compares it: line, cells, defect.
    type Row = (u64, Vec<String>, Option<String>);

    /// The rows of a file as [`open`] gives them to the pseudonymiser, in
    /// spans of about `step` bytes: opened from memory and from a file.
    fn opened_rows(bytes: &[u8], step: usize) -> [Vec<Row>; 2] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.csv");
        std::fs::write(&path, bytes).unwrap();
        let files = [
            open_csv_bytes_in(bytes.to_vec(), Path::new("x.csv"), step).unwrap(),
            open_csv_file(&path, step).unwrap().expect("no quotes"),
        ];
        files.map(|f| {
            let width = f.header.len();
            let Body::Text(text) = f.body else {
                panic!("a quote-free body stays text")
            };
            let mut rows = Vec::new();
            let mut buf = Vec::new();
            for span in text.spans() {
                text.for_each_row(*span, width, &mut buf, |r| {
                    let cells = (0..width).map(|i| r.cell(i).to_string()).collect();
                    rows.push((r.line, cells, r.defect));
                })
                .unwrap();
            }
            rows
        })
    }

    #[test]
    fn text_bodies_give_the_rows_the_csv_reader_gives() {
        let mut text: Vec<u8> = b"\xEF\xBB\xBFa;b;c\r\n".to_vec();
        let endings: [&[u8]; 5] = [b"\n", b"\r\n", b"\r", b"\r\n\r\n", b"\n\r\n"];
        for i in 0..3000 {
            let row: Vec<u8> = match i % 11 {
                0 => b"".to_vec(),
                1 => format!("x{i};y;z;extra").into_bytes(),
                2 => format!("x{i};y;z; \t").into_bytes(),
                3 => b" ; \x0b;\xC2\xA0".to_vec(),
                4 => [format!("x{i};").as_bytes(), b"\xE9t\xE9"].concat(),
                5 => vec![b'x', 0xE9, b';', b'1'],
                6 => format!("x{i}").into_bytes(),
                7 => format!(";;;;x{i}").into_bytes(),
                8 => format!("\u{a0}x{i}\u{2003};\u{a0};").into_bytes(),
                _ => format!("x{i};é{i};").into_bytes(),
            };
            text.extend(row);
            text.extend(endings[i % endings.len()]);
        }
        text.extend(b"last;row");
        let table = read_csv_bytes(&text, Path::new("x.csv")).unwrap();
        let expected: Vec<Row> = table
            .rows
            .iter()
            .map(|r| {
                let cells = (0..3).map(|i| r.cells.get(i).unwrap_or("").to_string());
                (r.line, cells.collect(), r.defect.clone())
            })
            .collect();
        assert!(expected.len() > 2000);
        for step in [1, 100, 4096, usize::MAX / 2] {
            for rows in opened_rows(&text, step) {
                assert_eq!(rows, expected, "spans of {step} bytes");
            }
        }
    }

    /// A quote anywhere in the body, even past the first span, means the
    /// file is read whole into rows, as [`read`] reads it.
    #[test]
    fn quoted_files_are_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.csv");
        let mut text = String::from("\u{feff}a,b\r\n");
        for i in 0..2000 {
            text.push_str(&format!("x{i},y\r\n"));
        }
        text.push_str("\"line\nbreak\",z\n");
        std::fs::write(&path, &text).unwrap();
        assert!(open_csv_file(&path, 100).unwrap().is_none());
        let opened = open(&path).unwrap();
        let Body::Rows(rows) = opened.body else {
            panic!("a quoted body is read into rows")
        };
        let whole = read(&path).unwrap();
        assert_eq!(opened.header, whole.header);
        assert_eq!(rows.len(), 2001);
        for (a, b) in rows.iter().zip(&whole.rows) {
            assert_eq!((a.line, &a.cells, &a.defect), (b.line, &b.cells, &b.defect));
        }
    }

    #[test]
    fn extra_cells_are_a_defect_and_short_rows_are_padded() {
        let t = read_csv_bytes(b"a,b\n1\n1,2,3\n", Path::new("x.csv")).unwrap();
        assert_eq!(t.rows[0].cells, vec!["1", ""]);
        assert!(t.rows[0].defect.is_none());
        assert!(t.rows[1].defect.is_some());
    }

    #[test]
    fn invalid_utf8_marks_the_row_not_the_file() {
        let t = read_csv_bytes(b"a,b\nok,1\n\xE9t\xE9,2\n", Path::new("x.csv")).unwrap();
        assert!(t.rows[0].defect.is_none());
        assert!(t.rows[1].defect.as_deref().unwrap().contains("UTF-8"));
    }
}
