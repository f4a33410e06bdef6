"""Features: parse model output, shift to image pixels, geolocate, NMS, GeoJSON out. No AWS."""
