"""CVM: customer value scoring for retail banks."""
