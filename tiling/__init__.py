"""Images and pixels: open, tile grid, window reads, tile encoding. No AWS, no worker imports."""
