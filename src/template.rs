//! Blank form templates: the CSV header and an Excel workbook whose first
//! sheet holds the header (the sheet pseudonymise reads) and whose second
//! sheet explains each column and its accepted values.

use std::path::Path;

use rust_xlsxwriter::{DataValidation, Format, Workbook, XlsxError};

use crate::schema::{Form, Role, code_list};

/// Rows of the data sheet that get drop-down lists for coded columns.
const VALIDATED_ROWS: u32 = 5000;

/// Accepted values of a column, in words.
pub fn accepted_values(role: Role, codes: Option<&str>) -> String {
    match role {
        Role::Reference => "required; unique within the file".into(),
        Role::EventDate => "YYYY-MM-DD, DD/MM/YYYY or D/M/YYYY".into(),
        Role::DateOfBirth => "YYYY-MM-DD, DD/MM/YYYY, D/M/YYYY or YYYY".into(),
        Role::FamilyName | Role::GivenName => "any script; may be blank".into(),
        Role::PassportNumber => "letters, digits, spaces, dashes".into(),
        Role::Nationality => "country name, nationality, or ISO code (ID, IDN)".into(),
        Role::YesNo => "yes/y/true/1, no/n/false/0, blank = unknown".into(),
        Role::Sex | Role::Code => {
            let list = code_list(codes.unwrap_or_default());
            list.spellings
                .iter()
                .map(|s| s.join("/"))
                .collect::<Vec<_>>()
                .join(", ")
                + "; blank = unknown"
        }
    }
}

/// Writes the Excel template for a form.
pub fn write_xlsx(form: Form, path: &Path) -> Result<(), XlsxError> {
    let schema = form.schema();
    let mut book = Workbook::new();
    let bold = Format::new().set_bold();
    let text = Format::new().set_num_format("@");
    let data = book.add_worksheet();
    data.set_name(form.code())?;
    for (i, c) in schema.columns.iter().enumerate() {
        let col = i as u16;
        data.write_string_with_format(0, col, &c.name, &bold)?;
        data.set_column_width(col, (c.name.len() as f64 + 4.0).max(14.0))?;
        // Text format keeps passport numbers and references as typed.
        if matches!(c.role, Role::Reference | Role::PassportNumber) {
            data.set_column_format(col, &text)?;
        }
        let list: Option<Vec<&str>> = match c.role {
            Role::Sex | Role::Code => Some(
                code_list(c.codes.as_deref().unwrap_or_default())
                    .codes
                    .clone(),
            ),
            Role::YesNo => Some(vec!["yes", "no"]),
            _ => None,
        };
        if let Some(values) = list {
            let v = DataValidation::new()
                .allow_list_strings(&values)?
                .set_input_title(&c.name)?;
            data.add_data_validation(1, col, VALIDATED_ROWS, col, &v)?;
        }
    }
    data.set_freeze_panes(1, 0)?;
    let guide = book.add_worksheet();
    guide.set_name("guide")?;
    for (col, h) in ["column", "meaning", "accepted values"].iter().enumerate() {
        guide.write_string_with_format(0, col as u16, *h, &bold)?;
    }
    for (i, c) in schema.columns.iter().enumerate() {
        let row = i as u32 + 1;
        guide.write_string(row, 0, &c.name)?;
        guide.write_string(row, 1, &c.help)?;
        guide.write_string(row, 2, accepted_values(c.role, c.codes.as_deref()))?;
    }
    guide.set_column_width(0, 30)?;
    guide.set_column_width(1, 60)?;
    guide.set_column_width(2, 60)?;
    book.save(path)
}
