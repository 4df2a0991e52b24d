"""A small OpenAI-compatible OCR server on RapidOCR (PP-OCRv4 ONNX models, CPU), run as a managed
backend: `python -m seadragon_gw.ocr --port P --det-limit N`. Its resolution profiles are extra argv.

Needs the `ocr` extra (`pip install 'seadragon_gw[ocr]'`): rapidocr-onnxruntime and Pillow. The
gateway itself never imports this package, so it runs without them.
"""
