//! Reading an import file: XLSX (the first sheet) or CSV in UTF-8 (with or without a BOM),
//! UTF-16 with a BOM, or Windows-1251, separated by `,`, `;` or tab — detected, as Russian
//! Excel saves them. Rows are numbered as a spreadsheet shows them (the header is row 1).

use bytes::Bytes;
use calamine::{Data, Reader, Xlsx};
use encoding_rs::{Encoding, WINDOWS_1251};
use std::io::Cursor;

/// Why a file cannot be read, in both languages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{en}")]
pub struct ReadError {
    pub en: String,
    pub ru: String,
}

impl ReadError {
    fn new(en: impl Into<String>, ru: impl Into<String>) -> Self {
        ReadError { en: en.into(), ru: ru.into() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Xlsx,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Xlsx => "xlsx",
        }
    }
}

/// A file's table: its header row and an iterator over the data rows.
pub struct Sheet {
    pub format: Format,
    /// The text encoding a CSV was read in (`UTF-8`, `windows-1251`, …).
    pub encoding: &'static str,
    /// The separator a CSV was read with.
    pub delimiter: Option<char>,
    pub headers: Vec<String>,
    /// Data rows (blank rows are not counted).
    pub total: u64,
    rows: Rows,
}

enum Rows {
    Csv { records: csv::StringRecordsIntoIter<Cursor<Bytes>>, at: RowCounter },
    Xlsx(std::vec::IntoIter<(i64, Vec<String>)>),
}

/// One data row: its spreadsheet row number and cells (as many as the row has).
pub type Row = (i64, Vec<String>);

impl Iterator for Sheet {
    type Item = Result<Row, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.rows {
            Rows::Xlsx(it) => it.next().map(Ok),
            Rows::Csv { records, at } => loop {
                let rec = records.next()?;
                match rec {
                    Ok(r) => {
                        let row = at.advance(&r);
                        if r.iter().all(|c| c.trim().is_empty()) {
                            continue;
                        }
                        return Some(Ok((row, r.iter().map(str::to_string).collect())));
                    }
                    Err(e) => {
                        let row = at.row + 1;
                        return Some(Err(ReadError::new(
                            format!("row {row}: the CSV cannot be read: {e}"),
                            format!("строка {row}: CSV не читается: {e}"),
                        )));
                    }
                }
            },
        }
    }
}

/// Turns the CSV reader's line numbers into spreadsheet rows: a blank line is a row of its
/// own, but a quoted cell spanning several lines is one row.
struct RowCounter {
    row: i64,
    end_line: u64,
    text: Bytes,
}

impl RowCounter {
    fn after_header(h: &csv::StringRecord, text: Bytes) -> Self {
        RowCounter { row: 1, end_line: 1 + newlines(h), text }
    }

    fn advance(&mut self, r: &csv::StringRecord) -> i64 {
        // The reader's position is where it started reading, before the blank lines it skipped.
        let start = match r.position() {
            Some(p) => {
                let skipped = self.text.get(p.byte() as usize..).unwrap_or_default();
                let blank = skipped.iter().take_while(|b| matches!(b, b'\r' | b'\n')).filter(|b| **b == b'\n').count();
                p.line() + blank as u64
            }
            None => self.end_line + 1,
        };
        self.row += start.saturating_sub(self.end_line).max(1) as i64;
        self.end_line = start + newlines(r);
        self.row
    }
}

fn newlines(r: &csv::StringRecord) -> u64 {
    r.iter().map(|c| c.bytes().filter(|b| *b == b'\n').count() as u64).sum()
}

/// Opens a file from its bytes; `name` only helps tell the format.
pub fn open(bytes: Bytes, name: &str) -> Result<Sheet, ReadError> {
    if bytes.starts_with(b"PK\x03\x04") {
        return open_xlsx(bytes);
    }
    let lower = name.to_lowercase();
    if lower.ends_with(".xlsx") || lower.ends_with(".xls") || bytes.starts_with(&[0xD0, 0xCF, 0x11, 0xE0]) {
        return Err(ReadError::new(
            "not a readable spreadsheet: save it as .xlsx or .csv",
            "файл не читается как таблица: сохраните его как .xlsx или .csv",
        ));
    }
    open_csv(bytes)
}

/// The text of a CSV file as UTF-8, and the encoding it was in.
pub fn decode(raw: Bytes) -> (Bytes, &'static str) {
    if let Some((enc, bom)) = Encoding::for_bom(&raw) {
        let (text, _) = enc.decode_without_bom_handling(&raw[bom..]);
        return (Bytes::from(text.into_owned().into_bytes()), enc.name());
    }
    if std::str::from_utf8(&raw).is_ok() {
        return (raw, "UTF-8");
    }
    let (text, _) = WINDOWS_1251.decode_without_bom_handling(&raw);
    (Bytes::from(text.into_owned().into_bytes()), WINDOWS_1251.name())
}

/// The separator of the header line: the most frequent of `;`, `,` and tab outside quotes
/// (`,` for a file of one column).
pub fn detect_delimiter(text: &[u8]) -> u8 {
    let mut counts = [(b';', 0usize), (b',', 0), (b'\t', 0)];
    let mut quoted = false;
    for &b in text {
        match b {
            b'"' => quoted = !quoted,
            b'\n' if !quoted => break,
            _ if !quoted => {
                if let Some(c) = counts.iter_mut().find(|(d, _)| *d == b) {
                    c.1 += 1;
                }
            }
            _ => {}
        }
    }
    counts.iter().max_by_key(|(_, n)| *n).filter(|(_, n)| *n > 0).map(|(d, _)| *d).unwrap_or(b',')
}

fn csv_reader(text: Bytes, delimiter: u8) -> csv::Reader<Cursor<Bytes>> {
    csv::ReaderBuilder::new().delimiter(delimiter).flexible(true).has_headers(true).from_reader(Cursor::new(text))
}

fn open_csv(raw: Bytes) -> Result<Sheet, ReadError> {
    let (text, encoding) = decode(raw);
    let delimiter = detect_delimiter(&text);
    // A first pass counts the rows (for progress) and finds a broken file before anything is written.
    let mut total = 0u64;
    let mut counter = csv_reader(text.clone(), delimiter);
    for (i, r) in counter.records().enumerate() {
        let r = r.map_err(|e| {
            ReadError::new(format!("row {}: the CSV cannot be read: {e}", i + 2), format!("строка {}: CSV не читается: {e}", i + 2))
        })?;
        if !r.iter().all(|c| c.trim().is_empty()) {
            total += 1;
        }
    }
    let mut reader = csv_reader(text.clone(), delimiter);
    let header = reader
        .headers()
        .map_err(|e| ReadError::new(format!("the header row cannot be read: {e}"), format!("строка заголовков не читается: {e}")))?
        .clone();
    let at = RowCounter::after_header(&header, text);
    let headers: Vec<String> = header.iter().map(|h| h.trim().to_string()).collect();
    check_headers(&headers)?;
    Ok(Sheet {
        format: Format::Csv,
        encoding,
        delimiter: Some(delimiter as char),
        headers,
        total,
        rows: Rows::Csv { records: reader.into_records(), at },
    })
}

fn check_headers(headers: &[String]) -> Result<(), ReadError> {
    if headers.iter().all(|h| h.is_empty()) {
        return Err(ReadError::new(
            "the file has no header row: its first row must name the columns",
            "в файле нет строки заголовков: первая строка должна называть столбцы",
        ));
    }
    Ok(())
}

/// A cell as text: whole numbers without a fraction (phones are often stored as numbers).
fn cell_text(d: &Data) -> String {
    match d {
        Data::Empty => String::new(),
        Data::String(s) => s.trim().to_string(),
        Data::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", *f as i64),
        Data::Error(_) => String::new(),
        other => other.to_string(),
    }
}

/// Columns read from a sheet; cells further right are ignored.
const XLSX_MAX_COLUMNS: u32 = 256;
/// Non-empty cells read from a sheet at most (memory stays bounded whatever the file claims).
const XLSX_MAX_CELLS: usize = 20_000_000;

fn open_xlsx(bytes: Bytes) -> Result<Sheet, ReadError> {
    let bad = |e: String| ReadError::new(format!("the XLSX file cannot be read: {e}"), format!("файл XLSX не читается: {e}"));
    let mut book: Xlsx<_> = Xlsx::new(Cursor::new(bytes)).map_err(|e| bad(e.to_string()))?;
    let Some(first) = book.sheet_names().first().cloned() else {
        return Err(ReadError::new("the workbook has no sheets", "в книге нет листов"));
    };
    // Cells one by one rather than the sheet's whole rectangle: a file may claim a huge
    // sheet with two cells in opposite corners.
    let mut by_row: std::collections::BTreeMap<u32, Vec<(u32, String)>> = Default::default();
    let mut cells = 0usize;
    let mut reader = book.worksheet_cells_reader(&first).map_err(|e| bad(e.to_string()))?;
    while let Some(cell) = reader.next_cell().map_err(|e| bad(e.to_string()))? {
        let (r, c) = cell.get_position();
        if c >= XLSX_MAX_COLUMNS {
            continue;
        }
        let text = cell_text(&Data::from(cell.get_value().clone()));
        if text.is_empty() {
            continue;
        }
        cells += 1;
        if cells > XLSX_MAX_CELLS {
            return Err(ReadError::new(
                format!("the sheet has more than {XLSX_MAX_CELLS} filled cells: split the file"),
                format!("на листе больше {XLSX_MAX_CELLS} заполненных ячеек: разделите файл"),
            ));
        }
        by_row.entry(r).or_default().push((c, text));
    }
    let mut rows = by_row.into_iter().map(|(r, cells)| {
        let width = cells.iter().map(|(c, _)| *c + 1).max().unwrap_or(0) as usize;
        let mut out = vec![String::new(); width];
        for (c, t) in cells {
            out[c as usize] = t;
        }
        (r as i64 + 1, out)
    });
    let Some((_, headers)) = rows.next() else {
        return Err(ReadError::new("the first sheet is empty", "первый лист пуст"));
    };
    check_headers(&headers)?;
    let data: Vec<Row> = rows.collect();
    Ok(Sheet {
        format: Format::Xlsx,
        encoding: "UTF-8",
        delimiter: None,
        headers,
        total: data.len() as u64,
        rows: Rows::Xlsx(data.into_iter()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(s: Sheet) -> Vec<Row> {
        s.map(|r| r.unwrap()).collect()
    }

    #[test]
    fn windows_1251_with_semicolons_is_detected() {
        let (bytes, _, _) = WINDOWS_1251.encode("ФИО;Телефон;Город\r\nИванов Иван;8 (921) 555-12-34;Пермь\r\n");
        let s = open(Bytes::from(bytes.into_owned()), "base.csv").unwrap();
        assert_eq!(s.encoding, "windows-1251");
        assert_eq!(s.delimiter, Some(';'));
        assert_eq!(s.headers, ["ФИО", "Телефон", "Город"]);
        assert_eq!(rows(s), vec![(2, vec!["Иванов Иван".to_string(), "8 (921) 555-12-34".into(), "Пермь".into()])]);
    }

    #[test]
    fn utf8_with_bom_commas_and_tabs() {
        let s = open(Bytes::from("\u{feff}Name,Phone\n\"Doe, John\",+7 921 5551234\n\n".to_string()), "x.csv").unwrap();
        assert_eq!(s.encoding, "UTF-8");
        assert_eq!(s.headers, ["Name", "Phone"]);
        assert_eq!(s.total, 1);
        assert_eq!(rows(s), vec![(2, vec!["Doe, John".to_string(), "+7 921 5551234".into()])]);
        let t = open(Bytes::from("Имя\tТелефон\nА\t1\n"), "x.tsv").unwrap();
        assert_eq!(t.delimiter, Some('\t'));
    }

    #[test]
    fn delimiters_inside_quotes_do_not_count() {
        assert_eq!(detect_delimiter(b"\"a,b,c\";d\n1;2"), b';');
        assert_eq!(detect_delimiter(b"single\n1"), b',');
    }

    #[test]
    fn blank_rows_are_skipped_but_numbers_stay_the_spreadsheet_s() {
        let s = open(Bytes::from("phone,note\n1,\"two\nlines\"\n,\n\n3,x\n"), "x.csv").unwrap();
        assert_eq!(rows(s).iter().map(|r| r.0).collect::<Vec<_>>(), vec![2, 5]);
    }

    #[test]
    fn old_excel_files_and_empty_headers_are_refused_with_a_reason() {
        assert!(open(Bytes::from_static(&[0xD0, 0xCF, 0x11, 0xE0, 0, 0]), "a.xls").err().unwrap().ru.contains("xlsx"));
        assert!(open(Bytes::from(",,\n1,2,3\n"), "a.csv").is_err());
    }

    #[test]
    fn a_sheet_claiming_a_huge_rectangle_reads_only_its_cells() {
        let mut book = rust_xlsxwriter::Workbook::new();
        let sheet = book.add_worksheet();
        sheet.write_string(0, 0, "Phone").unwrap();
        sheet.write_string(1, 0, "+79215551234").unwrap();
        sheet.write_string(1_048_575, 16_383, "far away").unwrap();
        let s = open(Bytes::from(book.save_to_buffer().unwrap()), "x.xlsx").unwrap();
        assert_eq!(s.headers, ["Phone"]);
        assert_eq!(rows(s), vec![(2, vec!["+79215551234".to_string()])]);
    }
}
