//! Hardware-in-the-loop harness for the heartline dongle: the firmware under
//! QEMU (or a real board) attached to real host daemons. Placeholder until
//! the dongle's firmware exists.
