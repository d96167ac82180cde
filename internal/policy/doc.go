// Package policy decides, inline, whether an identity may use a target and whether each of
// its statements may run, from one YAML file that security teams write and auditors read.
// See README.md in this directory for the file format with examples.
//
// # Decision order
//
// Access (session start): the strongest grant whose identity part (subjects globs, kinds,
// groups, CEL when) and target part (targets globs, environments, labels, production) match
// gives the level: read, write or admin. No grant, no identity or no target: Deny, rule
// "no-grant".
//
// Decide (every statement), in this order; the first step that refuses decides:
//
//  1. Grants are matched again with the policy in force, so a reload that removes or
//     lowers a grant applies to open sessions at once (they are not dropped). The level is
//     the lower of the session's level (its upstream role was chosen for it) and the grant's.
//  2. Level: read covers read, transaction and session statements; write adds write; admin
//     adds ddl, admin and unknown. Statements that change the session's role (SET ROLE,
//     SET SESSION AUTHORIZATION, their RESET forms, set_config of role or of a computed
//     name, DISCARD ALL) count as admin whatever their category, because they would escape
//     the least-privileged upstream role. Not covered: Deny, rule "access-level" — unless
//     the first rule that matches is an allow rule whose covers lists the category (the
//     built-in development-outside-production lets write access cover development work
//     outside production this way).
//  3. Rules, in file order; the first whose condition holds decides (allow, deny or
//     require_approval, with max_rows, max_affected_rows and a masking profile on
//     allow). A condition that fails at run time (a missing claim, say) counts as matching
//     for deny and require_approval rules and as not matching for allow rules: errors fail
//     closed.
//  4. Unknown statements (DO, CALL, functions neither the target's catalog nor the
//     built-in list vouches for) below admin level are refused, rule "unknown-statement",
//     unless the deciding rule denies or holds them, or is an allow rule with
//     allow_unknown: true or covers: [unknown]. (Text that does not parse never gets here:
//     the gate answers it with SQLSTATE 42601.) A generic allow rule never lets
//     an unknown statement through by accident.
//  5. No rule matched: the policy's defaults (allow unless the file says deny), rule
//     "default".
//
// require_approval is returned as such, with the rule's message; the gate's approval workflow
// (internal/approval) files the request and tells the client what to do.
//
// Masking: an allow carries the rule's mask profile, else the first masking.raw_access
// entry naming the identity, else masking.default. The built-in "default" profile (sent to
// the gate as "") masks every detected class; "none" shows raw values; named profiles list
// the classes they show raw and may choose a strategy per class (partial, hash, redact,
// null; "*" for every class not named), which internal/mask applies.
//
// # CEL
//
// Conditions are CEL over identity, target, statement, session and time, type-checked at
// load: a misspelt field or a non-boolean condition is an error with its file line. Grants
// and raw_access entries cannot see statement. Programs are compiled once per load and
// evaluated against one pooled activation per decision, which converts each field at most
// once (about 1.5 µs and 3 small allocations per statement with the default policy).
//
// # Reload
//
// Engine holds the compiled policy behind an atomic pointer. Watch polls the file; a valid
// new version is swapped in between decisions; an invalid one leaves the old policy in force
// and is logged and counted (gatehouse_policy_reload_errors_total).
package policy
