//! The board: its serial ports and its clock. Everything board-specific
//! lives in one module per board; another board is one more module with the
//! same three items (`Board::take`, `Board::now`, and the UARTs).

mod lm3s6965;

pub use lm3s6965::{Board, Uart, stack_high_water};
