// GeoDream editor extension. Live previews and the 3D viewer are added by the stages that produce them.
