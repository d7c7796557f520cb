"""Bugs the suite found in the project. A row that fails because of one names it; docs/reliability.md has the
reproduction and the suggested fix. Rows fail honestly until the project fixes the cause."""

FINDINGS = {
    "F1": "A 200 answer without `data` (e.g. `{}`) is read as an empty list: snapshots and usage windows are "
    "replaced with nothing and the run succeeds (retention_pipeline/source/extract.py iter_items, parse_usage_page).",
    "F2": "An empty page that still carries a cursor ends paging even mid-list: the rows behind it are silently "
    "dropped (extract.py iter_items and fetch_usage_pages stop on `not page.data`).",
    "F3": "A 200 answer that is not JSON fails the run with a bare JSONDecodeError naming neither the endpoint nor "
    "the customer (extract.py catches only metronome.APIError outside the usage path).",
    "F4": "A sync whose items were not acknowledged (destination outage after retries, 207 rejections, Meta invalid "
    "entries) ends green with only INFO logs and metadata: a silent partial success (destinations/assets.py).",
    "F5": "Meta: a final batch retried after a lost answer reuses its finished session and is refused with "
    "2650/1870159 'session already finished'; its rows stay unacknowledged until the next run "
    "(destinations/meta.py _upload/_send).",
    "F6": "Contacts CSV: an opening quote that never closes swallows every following line into one 'malformed_row'; "
    "those people are neither loaded nor rejected (source/contacts.py read_contacts_csv).",
    "F7": "Contacts CSV: a field over 131,072 characters crashes the contacts asset with `_csv.Error: field larger "
    "than field limit`, naming neither the file, the line nor RETENTION_CONTACTS_PATH (source/contacts.py).",
    "F8": "RETENTION_EXPORT_DIR is interpolated into `COPY ... TO '<path>'`: a quote in the path fails the sync "
    "(after the destinations were updated) with a DuckDB parser error that does not name the variable "
    "(destinations/warehouse_export.py export_partition).",
}
