#pragma once

// Exit codes of the `dispatch` CLI (documented in the README and `dispatch --help`).
namespace dispatch::cli::exit_code {

inline constexpr int ok = 0;
// chat: the job failed (provider or dispatch error; details on stderr or in the JSON).
// batch: some lines could not be completed in this run (rerun the same command to resume).
inline constexpr int failed = 1;
inline constexpr int usage = 2;               // bad arguments, unreadable input file
inline constexpr int broker_unreachable = 3;  // no broker acknowledged / answered in time
inline constexpr int output_locked = 4;       // batch: another run holds the output file
// The broker refused the connection: our key is not allowed, the wrong broker key, or CURVE on
// one side only (the message says which).
inline constexpr int refused = 5;

}  // namespace dispatch::cli::exit_code
