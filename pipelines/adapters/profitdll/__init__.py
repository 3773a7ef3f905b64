"""ProfitDLL 4.0 (Nelogica) market-data binding: ctypes structs, loader, callbacks, offer book, session."""
