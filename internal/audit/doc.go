// Package audit is Aegis's tamper-evident, fail-closed audit log.
//
// Every request, allowed or denied, becomes one Record: a JSON line in a
// fixed field order, holding who asked (principal, how authenticated,
// client address, transport), what (model, version, action), what was
// decided and by which rule, keyed hashes of the input and output tensors
// (never the tensors, never a credential), sizes, status and latency.
//
// Guarantees:
//   - Chain: each line carries the SHA-256 of the exact bytes of the line
//     before it (the first, Genesis), and sequence numbers go up by one, so
//     a changed, removed, inserted or reordered line breaks the chain at a
//     place Verify names.
//   - Checkpoints: every CheckpointEvery records, every CheckpointInterval,
//     at Open, before each rotation and at Close, a checkpoint line signs
//     the chain head with an Ed25519 key. Someone who can write the files
//     but lacks the key cannot rewrite a record a checkpoint covers
//     without Verify noticing. Records after the last checkpoint (at most
//     CheckpointEvery of them) are protected by the chain only: such a
//     writer can rewrite or cut them.
//   - Write returns after the record is handed to the kernel (default:
//     survives the process being killed) or, with Durable, after it is on
//     stable storage (survives power loss), group-committing concurrent
//     writers into one write and one fdatasync.
//   - Fail closed: if a record cannot be written Write returns an error
//     wrapping ErrUnavailable and Healthy reports it until a write
//     succeeds again; the server refuses requests meanwhile. The log
//     retries by itself, cuts back any partial line so the chain stays
//     verifiable, and writes an outage record counting what it lost.
//   - Rotation keeps the chain: a full file ends with a checkpoint, is
//     renamed to <stem>-<first seq>.<ext>, and the new file's first line
//     chains from it. Open continues the chain after a restart, and
//     refuses a log whose active file does not verify.
//
// Verify checks a set of files and names the first broken record;
// `aegis audit verify` is its command line. docs/audit.md describes the
// format and what the log does not protect against.
package audit
