package mask

// Design notes (decisions a reviewer should be able to check):
//
//   - Column mapping, in order: the catalog entry of (table OID, attribute number) for plain
//     columns; the statement's result-column lineage for expressions (TableOID 0) and for
//     columns of tables the catalog has not seen; for a FETCH, the lineage of the cursor's
//     DECLARE (see Planner.Observe); the column name as a last hint. Text-like columns no
//     class covers go through the value detectors (FreeText) unless the profile turns them off.
//   - Derived values (through an expression) keep a partial mask only when the expression
//     keeps the value (lineage.Column.Preserved: casts, lower/upper/trim/initcap,
//     coalesce/nullif/CASE branches, min/max and other value-picking aggregates, arrays, rows
//     and JSON of it) and the value still validates as its class (lower(email) is still an
//     e-mail), or the value detectors account for all of it. Any other expression
//     (reverse, substring, ||, md5, string_agg, ...) gets the class's strategy with partial
//     replaced by redaction: reverse(email) still validates as an e-mail, and its partial
//     mask would show the reversed local part as a domain.
//   - Planner statistics (pg_stats, pg_stats_ext, pg_stats_ext_exprs, pg_statistic,
//     pg_statistic_ext_data sample columns) hold values of every column: NULL for every
//     non-raw profile, found by table OID + attnum (the catalog locates them) or by lineage.
//   - Values mixing several classes (email || ssn, ROW(email, ssn)) are redacted as a whole,
//     or hashed under the hash profile; whole-row values (row_to_json(c), to_jsonb(c), c, c.*)
//     are masked field by field, keyed by the source column names, so their structure stays.
//   - Dates of birth: partial keeps the year (1984-03-07 → 1984-01-01, in every DateStyle and
//     in binary); other strategies give 1900-01-01, or NULL. Other dates in a sensitive class
//     never keep anything.
//   - Numbers, uuid, bytea and other opaque types holding a sensitive class become NULL: no
//     other value is valid for every one of them. Binary records and binary arrays of json
//     likewise; inet/cidr keep their network part (/16 of IPv4, /32 of IPv6).
//   - Lengths: partial masks never lengthen a value except the fixed redaction text; varchar(n)
//     and char(n) limits are not visible on the wire and clients do not enforce them.
//   - Free-text detectors: e-mail, payment card (Luhn + issuer prefix), SSN with dashes, IBAN
//     (mod-97), AWS/GitHub/Slack/Stripe keys, JWT, PEM private keys, password hashes. Phone
//     numbers and bare nine-digit numbers are not detected in free text: too many false hits.
//   - Profiles a policy file names (masking.profiles, see FromPolicy) are the default
//     strategies overridden by the profile's per-class strategies and raw classes. An unknown
//     profile name falls back to strict, so a typo never shows raw values.
