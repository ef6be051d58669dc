"""The assessment core and everything a score needs: models, features, reasons, the writer."""
