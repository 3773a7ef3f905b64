"""Feed sources behind one interface (see base.FeedSource)."""
