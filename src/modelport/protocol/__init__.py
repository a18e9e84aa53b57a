"""What travels on the wire: tensor types, datatypes, signatures and codecs. Pure, no I/O."""
