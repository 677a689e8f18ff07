"""ferplus: FER2013 faces with the FERPlus crowd-sourced labels (8-class)."""
