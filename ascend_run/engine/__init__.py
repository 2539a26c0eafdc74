"""The Docker engine on this machine: finding or starting one (`local`), building images with progress
(`build`), and the local package index builds install from (`wheelhouse`)."""
