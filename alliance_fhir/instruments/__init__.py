"""The data contract: instrument mappings, text packs and the catalog that loads them."""
